"""train: fine-tune a timm backbone on one fold (or each fold in turn), with the recipe of pipeline.recipe.

Reads data/processed/<comp>/folds.csv and the images under the competition's raw folder; writes, per
fold, data/runs/<comp>/<exp>/fold<k>/: log.csv (one row per epoch), oof_plain.csv (validation-row
probabilities of the saved weights, no TTA), and model.safetensors last (the stage's output, with the
config fingerprint in its metadata). With train.ema on, the EMA weights are scored beside the raw ones
each epoch and saved unless the raw ones score better; with train.keep: best (the default) the saved
weights are those of the best-scoring epoch. While training, fold<k>/work/last.pt holds
everything needed to resume (pipeline.checkpoint); re-running the same command resumes from it, and
refuses to when the config changed. SIGTERM/SIGINT and train.time_budget save a checkpoint and stop (exit 75).
`train.lr: auto` takes lr-find's suggestion (pipeline.lr_find), running the range test first if needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline import artifacts, checkpoint, distributed, paths, recipe, tracking
from pipeline.augment import eval_transform, train_transform
from pipeline.cache import cache_for
from pipeline.config import TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict
from pipeline.data import encode_targets, read_csv
from pipeline.distributed import World
from pipeline.errors import UserError
from pipeline.loader import EpochSampler, ImageDataset, make_loader
from pipeline.metrics import score
from pipeline.model import build_model, data_config
from pipeline.progress import len_of_batch, progress
from pipeline.recipe import two_hot

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def activation_for(task: str, head: str = "classifier", num_classes: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Model outputs -> the probabilities stages exchange (a regression head's number -> a two-hot row)."""
    if head == "regression":
        return lambda outputs: two_hot(outputs.squeeze(1), num_classes)
    return torch.sigmoid if task == "multi_label" else (lambda logits: logits.softmax(dim=1))


def output_activation(cfg: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    return activation_for(cfg.data.task, cfg.model.head, cfg.num_classes)


def amp_settings(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> tuple[bool, torch.dtype]:
    """AMP on CUDA: bf16 where the GPU supports it (no scaler needed), else fp16 with a GradScaler.
    On CPU only when asked (train.cpu_bf16): bf16 autocast."""
    if device.type == "cpu" and cpu_bf16:
        return True, torch.bfloat16
    if not enabled or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def read_folds(out: paths.Paths) -> pd.DataFrame:
    if not out.folds_csv.exists():
        raise UserError(f"{out.folds_csv} not found; run `make folds CONFIG=...` first")
    return read_csv(out.folds_csv, "folds table").astype({"fold": int})


def trained_fingerprint(weights: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} is not a safetensors file this pipeline wrote ({exc}); "
                        f"delete {weights.parent} and re-run train") from exc  # fmt: skip


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
    activation: Callable[[torch.Tensor], torch.Tensor], amp: tuple[bool, torch.dtype],
) -> np.ndarray:  # fmt: skip
    was_training = model.training
    model.eval()
    outputs = []
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            outputs.append(activation(model(images.to(device, non_blocking=True)).float()).cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy()


@dataclass
class Fold:
    """Everything one fold's training loop works on."""

    cfg: Config
    fold: int
    device: torch.device
    out: paths.Paths
    fingerprint: str
    model: torch.nn.Module
    data_config: dict
    train_loader: torch.utils.data.DataLoader
    valid_loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    valid_rows: pd.DataFrame
    valid_targets: np.ndarray
    train_targets: np.ndarray
    train_size: int  # the image size train_loader currently produces (progressive resizing changes it)
    world: World = World()


def prepare_fold(cfg: Config, fold: int, device: torch.device, fp: str, world: World = distributed.SINGLE) -> Fold:
    out = paths.for_config(cfg)
    table = read_folds(out)
    train_rows, valid_rows = table[table["fold"] != fold], table[table["fold"] == fold]
    if train_rows.empty or valid_rows.empty:
        raise UserError(f"{out.folds_csv}: fold {fold} has no training or no validation rows; rebuild folds")
    seed = cfg.train.seed + fold
    seed_everything(seed, cfg.train.deterministic)
    model = build_model(cfg.model, cfg.num_classes)
    dcfg = data_config(model, cfg.train.image_size)
    raw = paths.raw_dir(cfg.comp)
    valid_targets = encode_targets(valid_rows["label"], cfg.data)
    train_targets = encode_targets(train_rows["label"], cfg.data)
    cache = cache_for(cfg, dcfg)
    train_ds = ImageDataset(raw, train_rows["image"], train_targets, train_transform(cfg.augment, dcfg), seed=seed,
                            cache=cache)  # fmt: skip
    valid_ds = ImageDataset(raw, valid_rows["image"], valid_targets, eval_transform(dcfg), cache=cache)
    if cfg.train.sampler == "balanced":
        sampler = recipe.BalancedEpochSampler(train_targets, seed, drop_last_batch_of=cfg.train.batch_size)
    else:
        sampler = EpochSampler(len(train_ds), seed, drop_last_batch_of=cfg.train.batch_size)
    workers = cfg.train.num_workers
    if world.active:  # every process takes its slice of each global batch
        sampler = distributed.ShardedSampler(sampler, world, cfg.train.batch_size)
    local_batch = distributed.per_rank_batch(cfg.train.batch_size, world)
    train_loader = make_loader(train_ds, local_batch, workers, device, sampler=sampler)
    valid_loader = make_loader(valid_ds, cfg.train.batch_size * 2, workers, device)
    if world.active and cfg.train.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return Fold(cfg, fold, device, out, fp, model, dcfg, train_loader, valid_loader, sampler, valid_rows,
                valid_targets, train_targets, dcfg["input_size"][-1], world)  # fmt: skip


def set_train_size(f: Fold, size: int) -> None:
    """Progressive resizing: the training transform at `size` (a new loader, so persistent workers see it)."""
    if size == f.train_size:
        return
    dataset = f.train_loader.dataset
    dataset.transform = train_transform(f.cfg.augment, {**f.data_config, "input_size": (3, size, size)})
    local_batch = distributed.per_rank_batch(f.cfg.train.batch_size, f.world)
    f.train_loader = make_loader(dataset, local_batch, f.cfg.train.num_workers, f.device, sampler=f.sampler)
    f.train_size = size
    log.info("fold %d: training at %d px", f.fold, size)


def resolve_lr(cfg: Config, device: torch.device) -> float:
    """train.lr, or with `auto` the LR range test's suggestion (run on fold 0 first if it has not been)."""
    if not isinstance(cfg.train.lr, str):
        return cfg.train.lr
    from pipeline import lr_find

    return lr_find.suggested_lr(cfg, device)


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
                partial["loss"] += loss.item() * len(images)
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
        tracking.sync_fold(cfg, fold)  # log.csv + config -> the tracker (tracking: none does nothing)
    distributed.barrier(world)
    return weights


def evaluate_epoch(
    f: Fold, keeper: recipe.BestKeeper, ema: torch.nn.Module | None, activation: Callable[[torch.Tensor], torch.Tensor],
    amp: tuple[bool, torch.dtype], epoch: int,
) -> dict[str, Any]:  # fmt: skip
    """Score the raw weights and the EMA's; offer the keeper the EMA's unless the raw weights scored better."""
    metric = f.cfg.metric
    probs = predict_probs(f.model, f.valid_loader, f.device, activation, amp)
    row: dict[str, Any] = {"epoch": epoch + 1, f"valid_{metric}": score(metric, f.valid_targets, probs)}
    candidate, candidate_probs, value, source = f.model, probs, row[f"valid_{metric}"], "raw"
    if ema is not None:
        ema_probs = predict_probs(ema.module, f.valid_loader, f.device, activation, amp)
        row[f"valid_{metric}_ema"] = ema_value = score(metric, f.valid_targets, ema_probs)
        if not recipe.better(metric, value, ema_value):
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
