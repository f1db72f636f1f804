"""train: fine-tune a timm backbone on one fold (or each fold in turn), with the recipe of pipeline.recipe.

Reads data/processed/<comp>/folds.csv and the images under the competition's raw folder; writes, per
fold, data/runs/<comp>/<exp>/fold<k>/: log.csv (one row per epoch), oof_plain.csv (validation-row
probabilities of the saved weights, no TTA), and model.safetensors last (the stage's output, with the
config fingerprint in its metadata). With train.ema on, the EMA weights are scored beside the raw ones
each epoch and saved unless the raw ones score better; with train.keep: best (the default) the saved
weights are those of the best-scoring epoch. While training, fold<k>/work/last.pt holds
everything needed to resume (pipeline.checkpoint); re-running the same command resumes from it, and
refuses to when the config changed. SIGTERM/SIGINT and train.time_budget save a checkpoint and stop (exit 75).
`train.lr: auto` takes the LR range test's suggestion (pipeline.lr_range), running the range test first if needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import artifacts, checkpoint, distributed, lr_range, paths, recipe
from pipeline.checkpoint import trained_fingerprint
from pipeline.config import TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict
from pipeline.distributed import World
from pipeline.errors import UserError
from pipeline.fold import Fold, prepare_fold, set_train_size
from pipeline.metrics import is_better, score
from pipeline.progress import len_of_batch, progress
from pipeline.runtime import amp_settings, output_activation, predict_probs

log = logging.getLogger(__name__)


def resolve_lr(cfg: Config, device: torch.device) -> float:
    """train.lr, or with `auto` the LR range test's suggestion (run on fold 0 first if it has not been)."""
    if not isinstance(cfg.train.lr, str):
        return cfg.train.lr
    return lr_range.suggested_lr(cfg, device)


def train_fold(cfg: Config, fold: int, device: torch.device, world: World = distributed.SINGLE) -> Path:
    """Train fold `fold` to completion (resuming if a checkpoint exists); return the weights path."""
    out = paths.for_config(cfg)
    fp = fingerprint(cfg, TRAINING_SECTIONS)
    weights = out.weights(fold)
    if weights.exists():
        if trained_fingerprint(weights) == fp:
            os.utime(weights)  # tell Make it is up to date with the config it was checked against
            log.info("fold %d: already trained (%s), skipping", fold, weights)
            return weights
        raise UserError(
            f"{weights} was trained under a different config; delete {out.fold_dir(fold)} to retrain, "
            "or save the changed config as a new experiment (configs/<comp>/<new>.yaml)"
        )
    t = cfg.train
    lr = resolve_lr(cfg, device)
    f = prepare_fold(cfg, fold, device, fp, world)
    optimizer = recipe.build_optimizer(f.model, t, lr)
    batches_per_epoch = len(f.sampler.order()) // t.batch_size + bool(len(f.sampler.order()) % t.batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / t.accumulate)
    scheduler = recipe.PhasedScheduler(optimizer, t, lr, updates_per_epoch)
    amp = amp_settings(device, t.amp, t.cpu_bf16)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)
    mixer = recipe.BatchMixer(t, cfg.num_classes, cfg.data.task, cfg.model.head) if t.mixup or t.cutmix else None
    criterion = recipe.build_criterion(cfg, f.train_targets, mixing=mixer is not None)
    ema = recipe.build_ema(f.model, t)
    keeper = recipe.BestKeeper(cfg.metric, t.keep)
    wrapped: dict[bool, torch.nn.Module] = {}

    def forward_for(frozen: bool) -> torch.nn.Module:
        """What training calls: DDP-wrapped under torchrun (wrapped again when freezing changes which parameters
        train, as DDP requires), compiled when asked. State dicts always come from f.model."""
        if frozen not in wrapped:
            module = f.model
            if world.active:
                ids = [device.index] if device.type == "cuda" else None
                module = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
            wrapped.clear()
            wrapped[frozen] = torch.compile(module) if t.compile else module
        return wrapped[frozen]

    activation = output_activation(cfg)

    epoch, step, history, partial = 0, 0, [], {"seen": 0, "loss": 0.0, "seconds": 0.0}
    ckpt = out.checkpoint(fold)
    if ckpt.exists():
        state = checkpoint.load(ckpt)
        if state["fingerprint"] != fp:
            raise UserError(f"{ckpt} was made under a different config; delete {out.fold_dir(fold)} to start over, "
                            "or restore the config it was made with")  # fmt: skip
        f.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        keeper.load_state_dict(state["keeper"])
        checkpoint.set_rng_state(state["rng"])
        epoch, step, history = state["epoch"], state["step"], json.loads(state["history"])
        partial = json.loads(state["partial"])
        log.info("fold %d: resuming from epoch %d step %d (%s)", fold, epoch, step, ckpt)
    if world.is_main:
        artifacts.write_text(out.resolved_config, dump_yaml(to_dict(cfg)))

    def save_state(next_epoch: int, next_step: int) -> None:
        if not world.is_main:  # only rank 0 writes artifacts
            return
        checkpoint.save(
            ckpt, model=f.model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(), ema=ema.module.state_dict() if ema is not None else None,
            keeper=keeper.state_dict(), epoch=next_epoch, step=next_step, history=json.dumps(history),
            partial=json.dumps(partial), fingerprint=fp,
        )  # fmt: skip

    with checkpoint.StopFlag(checkpoint.parse_budget(t.time_budget)) as stop:
        while epoch < t.epochs and not keeper.patience_ran_out(t.early_stopping):
            recipe.set_backbone_frozen(f.model, epoch < t.freeze_epochs)
            forward = forward_for(epoch < t.freeze_epochs)
            set_train_size(f, recipe.progressive_size(t.progressive_sizes, epoch, t.epochs) or f.train_size)
            f.model.train()
            if step == 0:
                scheduler.step_update(epoch * updates_per_epoch)  # a new phase starts at its own warmup LR
            f.sampler.set_epoch(epoch, skip=step * t.batch_size)
            started = fetch_started = time.perf_counter()
            batches = progress(f.train_loader, total=len(f.train_loader.sampler), desc=f"fold {fold} epoch {epoch + 1}",
                               count=len_of_batch, enabled=world.is_main)  # fmt: skip
            for images, targets in batches:
                partial["data_wait"] = partial.get("data_wait", 0.0) + time.perf_counter() - fetch_started
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if mixer is not None:
                    images, targets = mixer(images, targets)
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                    loss = criterion(forward(images), targets)
                scaler.scale(loss / t.accumulate).backward()
                step += 1
                partial["seen"] += len(images)
                value = loss.item()
                if not math.isfinite(value):
                    raise diverged(f, f"epoch {epoch + 1} step {step} (loss {value})", lr)
                partial["loss"] += value * len(images)
                if step % t.accumulate and step < batches_per_epoch:
                    fetch_started = time.perf_counter()
                    continue  # gradients accumulate; stopping and checkpoints wait for the update
                recipe.clip_and_step(optimizer, scaler, f.model.parameters(), t.clip_grad)
                updates = epoch * updates_per_epoch + math.ceil(step / t.accumulate)
                scheduler.step_update(updates)
                if ema is not None:
                    ema.update(f.model, step=updates)
                every = t.checkpoint_every
                stopping = distributed.broadcast_flag(stop.should_stop(), world)  # every rank stops at the same step
                if stopping and stop.reason is None:
                    stop.reason = "rank 0 was stopped"
                if stopping or (every and step % every == 0 and step < batches_per_epoch):
                    partial["seconds"] += time.perf_counter() - started
                    started = time.perf_counter()
                    save_state(epoch, step)
                    if stop.reason:
                        where = f"at epoch {epoch + 1} step {step}"
                        raise checkpoint.Stopped(f"fold {fold}: stopped ({stop.reason}) {where}; checkpoint {ckpt}; "
                                                 "re-run the same command to resume")  # fmt: skip
                fetch_started = time.perf_counter()
            partial["seconds"] += time.perf_counter() - started
            row = evaluate_epoch(f, keeper, ema, activation, amp, epoch)
            row.update({
                "train_loss": partial["loss"] / max(partial["seen"], 1), "lr": recipe.head_lr(optimizer),
                "seconds": round(partial["seconds"], 2),
                "train_images_per_s": round(partial["seen"] / max(partial["seconds"], 1e-9), 1),
            })  # fmt: skip
            history.append(row)
            log.info("fold %d epoch %d/%d: loss %.4f  valid %s %.4f%s  (%.0f img/s)", fold, epoch + 1, t.epochs,
                     row["train_loss"], cfg.metric, row[f"valid_{cfg.metric}"],
                     f"  ema {row[f'valid_{cfg.metric}_ema']:.4f}" if ema is not None else "",
                     row["train_images_per_s"])  # fmt: skip
            warn_if_starved(f, row, partial)
            if world.is_main:
                artifacts.write_csv(out.train_log(fold), pd.DataFrame(history))
            epoch, step, partial = epoch + 1, 0, {"seen": 0, "loss": 0.0, "seconds": 0.0}
            save_state(epoch, step)
            if keeper.patience_ran_out(t.early_stopping) and epoch < t.epochs:
                log.info("fold %d: early stopping, no better %s for %d epochs (best: epoch %d, %.4f)", fold,
                         cfg.metric, t.early_stopping, keeper.best_epoch, keeper.best_score)  # fmt: skip
            if distributed.broadcast_flag(stop.should_stop(), world) and epoch < t.epochs:
                raise checkpoint.Stopped(f"fold {fold}: stopped ({stop.reason}) after epoch {epoch}; "
                                         f"checkpoint {ckpt}; re-run the same command to resume")  # fmt: skip
    if world.is_main:
        facts = {"lr": lr, "weights": keeper.source, "epoch": keeper.saved_epoch}
        finish_fold(f, keeper.probs, keeper.weights, facts)
        shutil.rmtree(ckpt.parent, ignore_errors=True)
    distributed.barrier(world)
    return weights


def diverged(f: Fold, where: str, lr: float | None) -> UserError:
    """The error that stops a fold whose loss or outputs stopped being finite (its last checkpoint stays)."""
    kept = f.out.checkpoint(f.fold)
    kept = f"checkpoint {kept} kept for inspection" if kept.exists() else "no checkpoint was saved before it"
    now = f" (now {lr:g})" if lr is not None else ""
    return UserError(f"fold {f.fold} diverged at {where}; lower train.lr{now} or set train.clip_grad (e.g. 1.0), "
                     f"then delete {f.out.fold_dir(f.fold)} and retrain; {kept}")  # fmt: skip


def evaluate_epoch(
    f: Fold, keeper: recipe.BestKeeper, ema: torch.nn.Module | None, activation: Callable[[torch.Tensor], torch.Tensor],
    amp: tuple[bool, torch.dtype], epoch: int,
) -> dict[str, Any]:  # fmt: skip
    """Score the raw weights and the EMA's; offer the keeper the EMA's unless the raw weights scored better."""
    metric = f.cfg.metric
    probs = predict_probs(f.model, f.valid_loader, f.device, activation, amp)
    if not np.isfinite(probs).all():
        raise diverged(f, f"epoch {epoch + 1} (validation probabilities not finite)", None)
    row: dict[str, Any] = {"epoch": epoch + 1, f"valid_{metric}": score(metric, f.valid_targets, probs)}
    candidate, candidate_probs, value, source = f.model, probs, row[f"valid_{metric}"], "raw"
    if ema is not None:
        ema_probs = predict_probs(ema.module, f.valid_loader, f.device, activation, amp)
        if not np.isfinite(ema_probs).all():
            raise diverged(f, f"epoch {epoch + 1} (EMA validation probabilities not finite)", None)
        row[f"valid_{metric}_ema"] = ema_value = score(metric, f.valid_targets, ema_probs)
        if not is_better(metric, value, ema_value):
            candidate, candidate_probs, value, source = ema.module, ema_probs, ema_value, "ema"
        row["candidate"] = source
    keeper.offer(epoch + 1, value, candidate_probs, candidate.state_dict(), source)
    return row


def finish_fold(f: Fold, probs: np.ndarray, state: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
    """Write the validation probabilities, then the weights with their provenance (the stage's output, last)."""
    oof = pd.DataFrame(probs, columns=f.cfg.data.classes)
    oof.insert(0, "id", f.valid_rows["id"].to_numpy())
    artifacts.write_csv(f.out.oof_plain(f.fold), oof)
    metadata = {
        "fingerprint": f.fingerprint,
        "model": f.cfg.model.name,
        "num_classes": str(f.cfg.num_classes),
        "classes": json.dumps(f.cfg.data.classes),
        "data_config": json.dumps(f.data_config),
        "pretrained_cfg": json.dumps(getattr(f.model, "pretrained_cfg", {}), default=str),
        "fold": str(f.fold),
        "recipe": json.dumps(facts),  # the resolved LR, raw or EMA weights, the epoch they come from
    }
    artifacts.save_safetensors(f.out.weights(f.fold), state, metadata)


DATA_WAIT_LIMIT = 0.10  # above this share of a step spent waiting for data, the loader is the bottleneck


def warn_if_starved(f: Fold, row: dict[str, Any], partial: dict[str, float]) -> None:
    """Record the share of the epoch spent waiting for batches; warn once per fold when it passes 10%."""
    share = partial.get("data_wait", 0.0) / max(partial["seconds"], 1e-9)
    row["data_wait_share"] = round(share, 3)
    if share > DATA_WAIT_LIMIT and not getattr(f, "warned_starved", False):
        f.warned_starved = True
        log.warning(
            "fold %d: %.0f%% of training time was spent waiting for data (the model is starved): raise "
            "train.num_workers (now %d), keep train.cache on (decodes each image once), or lower train.image_size",
            f.fold, 100 * share, f.cfg.train.num_workers,
        )  # fmt: skip


def run(args: argparse.Namespace) -> None:
    distributed.run_folds(args, train_fold)
