"""The training loop of one fold (or seed-bag member): build the run, resume it, train its epochs, evaluate, keep
the chosen weights, write its files (`train_fold`). The train stage (pipeline.training.train) runs it per fold;
`make bench` (pipeline.benchmarks.epoch_bench) times its epochs against a plain loop.

What it reads and writes, resume and stop included: the train stage's docstring (pipeline.training.train).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core import artifacts, budget, events, paths
from pipeline.core.bag import bag_seeds, describe, member_config
from pipeline.core.config import Config, dump_yaml, to_dict, training_fingerprint
from pipeline.core.errors import Stopped, UserError
from pipeline.core.metrics import is_better, score
from pipeline.core.progress import len_of_batch, progress
from pipeline.data.sources import sources_stamp
from pipeline.training import averaging, checkpoint, distributed, hot_path, losses, lr_range, optim, refit, schedule
from pipeline.training.checkpoint import trained_fingerprint, trained_sources
from pipeline.training.distributed import World
from pipeline.training.fold import Fold, prepare_fold, set_train_size
from pipeline.training.runtime import amp_settings, output_activation, predict_probs

log = logging.getLogger(__name__)


def resolve_lr(cfg: Config, device: torch.device) -> float:
    """train.lr, or with `auto` the LR range test's suggestion (run on fold 0 first if it has not been)."""
    if not isinstance(cfg.train.lr, str):
        return cfg.train.lr
    return lr_range.suggested_lr(cfg, device)


def fresh_partial() -> dict[str, float]:
    """The running totals of an epoch in progress (kept in checkpoints, so a resumed epoch logs whole numbers)."""
    return {"seen": 0, "loss": 0.0, "seconds": 0.0}


@dataclass
class TrainingState:
    """Everything training changes, each part with its own state_dict: one checkpoint (work/last.pt) holds them."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: schedule.PhasedScheduler
    scaler: torch.amp.GradScaler
    ema: torch.nn.Module | None
    keeper: averaging.BestKeeper
    epoch: int = 0
    step: int = 0  # batches done in the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch (log.csv)
    partial: dict[str, float] = field(default_factory=fresh_partial)
    swa: torch.optim.swa_utils.AveragedModel | None = None  # train.swa: the running mean of the last epochs

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None, "keeper": self.keeper.state_dict(),
            "epoch": self.epoch, "step": self.step, "history": json.dumps(self.history),
            "partial": json.dumps(self.partial), "swa": self.swa.state_dict() if self.swa is not None else None,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.keeper.load_state_dict(state["keeper"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history, self.partial = json.loads(state["history"]), json.loads(state["partial"])
        if self.swa is not None:
            self.swa.load_state_dict(state["swa"])


@dataclass
class FoldRun:
    """One fold's training: its data (Fold), its state, and what stays fixed while it trains."""

    f: Fold
    state: TrainingState
    lr: float
    amp: tuple[bool, torch.dtype]
    mixer: losses.BatchMixer | None
    criterion: torch.nn.Module
    batches_per_epoch: int
    updates_per_epoch: int
    wrapped: dict[bool, torch.nn.Module] = field(default_factory=dict)
    step_losses: hot_path.StepLosses | None = None  # this epoch's unread per-batch losses, on the device

    @property
    def checkpoint(self) -> Path:
        return self.f.out.checkpoint(self.f.fold)

    def save(self) -> None:
        if self.f.world.is_main:  # only rank 0 writes artifacts
            checkpoint.save(self.checkpoint, **self.state.state_dict(), fingerprint=self.f.fingerprint,
                            sources=self.f.sources)  # fmt: skip

    def forward(self, frozen: bool) -> torch.nn.Module:
        """What training calls: DDP-wrapped under torchrun (wrapped again when freezing changes which parameters
        train, as DDP requires), compiled when asked. State dicts always come from f.model."""
        if frozen not in self.wrapped:
            module = self.f.model
            if self.f.world.active:
                ids = [self.f.device.index] if self.f.device.type == "cuda" else None
                module = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
            self.wrapped.clear()
            self.wrapped[frozen] = torch.compile(module) if self.f.cfg.train.compile else module
        return self.wrapped[frozen]


def build_run(cfg: Config, fold: int, device: torch.device, fp: str, world: World, seed: int | None = None,
              lr_cfg: Config | None = None) -> FoldRun:  # fmt: skip
    """`lr_cfg`: the config train.lr auto is resolved under (a seed bag's: one range test for every member)."""
    t = cfg.train
    lr = resolve_lr(lr_cfg or cfg, device)
    f = prepare_fold(cfg, fold, device, fp, world, seed)
    optimizer = optim.build_optimizer(f.model, t, lr)
    batches_per_epoch = math.ceil(len(f.sampler.order()) / t.batch_size)
    updates_per_epoch = math.ceil(batches_per_epoch / t.accumulate)
    amp = amp_settings(device, t.amp, t.cpu_bf16)
    state = TrainingState(
        f.model, optimizer, schedule.PhasedScheduler(optimizer, t, lr, updates_per_epoch),
        torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16),
        averaging.build_ema(f.model, t, updates_per_epoch * t.epochs),
        averaging.BestKeeper(cfg.metric, t.keep), swa=averaging.build_swa(f.model, t),
    )  # fmt: skip
    mixer = losses.BatchMixer(t, cfg.num_classes, cfg.data.task, cfg.model.head) if t.mixup or t.cutmix else None
    # dense targets (train.pseudo / soft_labels) take the soft-target loss, as mixed batches do
    criterion = losses.build_criterion(cfg, f.train_targets, mixing=mixer is not None or f.dense_targets, device=device)
    return FoldRun(f, state, lr, amp, mixer, criterion, batches_per_epoch, updates_per_epoch,
                   step_losses=hot_path.StepLosses(device))  # fmt: skip


def resume(run: FoldRun) -> None:
    """Continue from work/last.pt when there is one made under this config."""
    ckpt, f = run.checkpoint, run.f
    if not ckpt.exists():
        return
    saved = checkpoint.load(ckpt)
    if saved["fingerprint"] != f.fingerprint:
        raise UserError(f"{ckpt} was made under a different config; delete {f.out.fold_dir(f.fold)} to start over, "
                        "or restore the config it was made with")  # fmt: skip
    if saved.get("sources", "") != f.sources:
        raise UserError(source_changed(ckpt, f.out.fold_dir(f.fold)))
    run.state.load_state_dict(saved)
    checkpoint.set_rng_state(saved["rng"])
    log.info("%s: resuming from epoch %d step %d (%s)", describe(f.fold, f.out.seed), run.state.epoch, run.state.step,
             ckpt)  # fmt: skip


def source_changed(path: Path, fold_dir: Path) -> str:
    """The refusal when train.pseudo / train.soft_labels' source has other predictions than `path` was made on."""
    return (f"{path} was made on other predictions of its train.pseudo / train.soft_labels source (the source re-ran "
            f"since); delete {fold_dir} to retrain on the source's new predictions")  # fmt: skip


def stopped(run: FoldRun, reason: str | None, where: str) -> Stopped:
    return Stopped(f"fold {run.f.fold}: stopped ({reason}) {where}; checkpoint {run.checkpoint}; "
                              "re-run the same command to resume")  # fmt: skip


def train_fold(cfg: Config, fold: int, device: torch.device, world: World = distributed.SINGLE,
               seed: int | None = None) -> Path:  # fmt: skip
    """Train fold `fold` (seed bag member `seed`, in fold<k>/seed<s>/) to completion, resuming if a checkpoint exists;
    return the weights path."""
    experiment = cfg
    if fold == refit.REFIT:  # make refit: all rows, the folds' median best epoch (pipeline.training.refit)
        cfg = refit.refit_config(cfg)
        if bag_seeds(experiment):
            log.info("refit: seed bag %s: one full-data model, with the first seed (%d)", bag_seeds(experiment),
                     cfg.train.seed)  # fmt: skip
    cfg = member_config(cfg, seed)  # a member trains as if train.seed were its seed (pipeline.core.bag)
    out = paths.for_config(cfg).member(seed)
    fp = training_fingerprint(cfg)
    weights = out.weights(fold)
    if weights.exists():
        if trained_fingerprint(weights) == fp and trained_sources(weights) != sources_stamp(cfg):
            raise UserError(source_changed(weights, out.fold_dir(fold)))
        if trained_fingerprint(weights) == fp:
            os.utime(weights)  # tell Make it is up to date with the config it was checked against
            log.info("%s: already trained (%s), skipping", describe(fold, seed), weights)
            return weights
        raise UserError(
            f"{weights} was trained under a different config; delete {out.fold_dir(fold)} to retrain, "
            "or save the changed config as a new experiment (configs/<comp>/<new>.yaml)"
        )
    run = build_run(cfg, fold, device, fp, world, seed, lr_cfg=experiment if seed is not None else None)
    resume(run)
    if world.is_main and fold != refit.REFIT:  # config.yaml stays the experiment's, not the refit's or a member's
        artifacts.write_text(out.resolved_config, dump_yaml(to_dict(experiment)))
    state, t = run.state, cfg.train
    with checkpoint.StopFlag(checkpoint.parse_budget(t.time_budget)) as stop:
        while state.epoch < t.epochs and not state.keeper.patience_ran_out(t.early_stopping):
            train_one_epoch(run, stop)
            end_epoch(run, evaluate(run.f, state.keeper, state.ema, output_activation(cfg), run.amp, state.epoch))
            if distributed.broadcast_flag(stop.should_stop(), world) and state.epoch < t.epochs:
                raise stopped(run, stop.reason, f"after epoch {state.epoch}")
    swa = apply_swa(run)
    if world.is_main:
        facts = {"lr": run.lr, "weights": state.keeper.source, "epoch": state.keeper.saved_epoch, "keep": t.keep,
                 **budget.budget_facts(cfg, run.updates_per_epoch * t.epochs)}  # fmt: skip
        if swa:
            facts["swa"] = swa
        finish_fold(run.f, state.keeper.probs, state.keeper.weights, facts)
        shutil.rmtree(run.checkpoint.parent, ignore_errors=True)
        if seed is None:  # a bag member's log stays in its folder (the trackers sync folds, not members)
            events.emit("fold_trained", cfg=cfg, fold=fold)  # trackers sync log.csv + config (tracking: none)
    distributed.barrier(world)
    return weights


def train_one_epoch(run: FoldRun, stop: checkpoint.StopFlag) -> None:
    """The batches of the current epoch from state.step on: forward, backward, update, checkpoints and stops."""
    f, state, t = run.f, run.state, run.f.cfg.train
    frozen = state.epoch < t.freeze_epochs
    optim.set_backbone_frozen(f.model, frozen)
    forward = run.forward(frozen)
    set_train_size(f, schedule.progressive_size(t.progressive_sizes, state.epoch, t.epochs) or f.train_size)
    f.model.train()
    if state.step == 0:
        state.scheduler.step_update(state.epoch * run.updates_per_epoch)  # a new phase starts at its own warmup LR
    f.sampler.set_epoch(state.epoch, skip=state.step * t.batch_size)
    started = fetch_started = time.perf_counter()
    batches = progress(f.train_loader, total=len(f.train_loader.sampler), desc=f"fold {f.fold} epoch {state.epoch + 1}",
                       count=len_of_batch, enabled=f.world.is_main)  # fmt: skip
    for images, targets in batches:
        state.partial["data_wait"] = state.partial.get("data_wait", 0.0) + time.perf_counter() - fetch_started
        if not train_step(run, forward, images, targets):
            fetch_started = time.perf_counter()
            continue  # gradients accumulate; stopping and checkpoints wait for the update
        stopping = False
        if hot_path.stop_check_due(state.step, run.batches_per_epoch, f.world.active):
            stopping = distributed.broadcast_flag(stop.should_stop(), f.world)  # every rank stops at the same step
        if stopping and stop.reason is None:
            stop.reason = "rank 0 was stopped"
        every = t.checkpoint_every
        if stopping or (every and state.step % every == 0 and state.step < run.batches_per_epoch):
            state.partial["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            read_losses(run)  # a checkpoint is never written over an unread (possibly non-finite) loss
            run.save()
            if stop.reason:
                raise stopped(run, stop.reason, f"at epoch {state.epoch + 1} step {state.step}")
        fetch_started = time.perf_counter()
    read_losses(run)
    state.partial["seconds"] += time.perf_counter() - started


def read_losses(run: FoldRun) -> None:
    """Fold the losses queued on the device into the epoch's totals (one host read); stop on a non-finite one."""
    total, bad = run.step_losses.read()
    run.state.partial["loss"] += total
    if bad is not None:
        step, value = bad
        raise diverged(run.f, f"epoch {run.state.epoch + 1} step {step} (loss {value})", run.lr)


def train_step(run: FoldRun, forward: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> bool:
    """One batch forward and backward; an optimizer update when the accumulation is complete (returns whether)."""
    f, state, t = run.f, run.state, run.f.cfg.train
    images = images.to(f.device, non_blocking=True)
    targets = targets.to(f.device, non_blocking=True)
    if run.mixer is not None:
        images, targets = run.mixer(images, targets)
    if f.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(f.device.type, dtype=run.amp[1], enabled=run.amp[0]):
        loss = run.criterion(forward(images), targets)
    state.scaler.scale(loss / t.accumulate).backward()
    state.step += 1
    state.partial["seen"] += len(images)
    run.step_losses.record(loss, len(images), state.step)  # read every SYNC_EVERY steps, not now (training.hot_path)
    if run.step_losses.full:
        read_losses(run)
    if state.step % t.accumulate and state.step < run.batches_per_epoch:
        return False
    optim.clip_and_step(state.optimizer, state.scaler, f.model.parameters(), t.clip_grad)
    updates = state.epoch * run.updates_per_epoch + math.ceil(state.step / t.accumulate)
    state.scheduler.step_update(updates)
    if state.ema is not None:
        state.ema.update(f.model, step=updates)
    return True


def end_epoch(run: FoldRun, row: dict[str, Any]) -> None:
    """Log the finished epoch (log.csv), start the next one and checkpoint there."""
    f, state, cfg = run.f, run.state, run.f.cfg
    partial = state.partial
    row.update({
        "train_loss": partial["loss"] / max(partial["seen"], 1), "lr": optim.head_lr(state.optimizer),
        "seconds": round(partial["seconds"], 2),
        "train_images_per_s": round(partial["seen"] / max(partial["seconds"], 1e-9), 1),
    })  # fmt: skip
    state.history.append(row)
    log.info("fold %d epoch %d/%d: loss %.4f  valid %s %.4f%s  (%.0f img/s)", f.fold, state.epoch + 1,
             cfg.train.epochs, row["train_loss"], cfg.metric, row[f"valid_{cfg.metric}"],
             f"  ema {row[f'valid_{cfg.metric}_ema']:.4f}" if f"valid_{cfg.metric}_ema" in row else "",
             row["train_images_per_s"])  # fmt: skip
    warn_if_starved(f, row, partial)
    if f.world.is_main:
        artifacts.write_csv(f.out.train_log(f.fold), pd.DataFrame(state.history))
    if averaging.swa_takes(state.epoch + 1, cfg.train):
        state.swa.update_parameters(f.model)  # before the checkpoint, so a resumed run averages each epoch once
    state.epoch, state.step, state.partial = state.epoch + 1, 0, fresh_partial()
    if state.epoch < cfg.train.epochs or state.swa is not None:
        run.save()  # not after the last epoch without SWA: finish_fold follows at once and deletes it unread
    keeper, patience = state.keeper, cfg.train.early_stopping
    if keeper.patience_ran_out(patience) and state.epoch < cfg.train.epochs:
        log.info("fold %d: early stopping, no better %s for %d epochs (best: epoch %d, %.4f)", f.fold, cfg.metric,
                 patience, keeper.best_epoch, keeper.best_score)  # fmt: skip


def apply_swa(run: FoldRun) -> dict[str, Any] | None:
    """train.swa: the soup of the last epochs' weights, BatchNorm re-estimated on the training batches, replaces
    the kept weights when it validates at least as well. Returns its facts (None when off or nothing averaged)."""
    state, f, metric = run.state, run.f, run.f.cfg.metric
    if state.swa is None or int(state.swa.n_averaged) == 0:
        return None
    keeper, t = state.keeper, f.cfg.train
    f.sampler.set_epoch(state.epoch, skip=0)
    model = averaging.swa_finish(state.swa, f.train_loader, f.device, t)
    probs = predict_probs(model, f.valid_loader, f.device, output_activation(f.cfg), run.amp)
    finite = bool(np.isfinite(probs).all())
    value = score(metric, f.valid_targets, probs) if finite else float("nan")
    kept_value = score(metric, f.valid_targets, keeper.probs)
    kept = finite and averaging.swa_wins(metric, value, kept_value)
    facts = {"epochs": [t.epochs - t.swa.epochs + 1, state.epoch], "averaged": int(state.swa.n_averaged),
             f"valid_{metric}": value, f"valid_{metric}_kept_epoch": kept_value, "kept": kept}  # fmt: skip
    log.info("fold %d: SWA of epochs %d-%d: valid %s %.4f vs %.4f for epoch %d (%s weights): %s", f.fold,
             *facts["epochs"], metric, value, kept_value, keeper.saved_epoch, keeper.source,
             "kept" if kept else "not kept")  # fmt: skip
    if kept:
        keeper.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        keeper.probs, keeper.source = probs, "swa"
    return facts


def diverged(f: Fold, where: str, lr: float | None) -> UserError:
    """The error that stops a fold whose loss or outputs stopped being finite (its last checkpoint stays)."""
    kept = f.out.checkpoint(f.fold)
    kept = f"checkpoint {kept} kept for inspection" if kept.exists() else "no checkpoint was saved before it"
    now = f" (now {lr:g})" if lr is not None else ""
    return UserError(f"fold {f.fold} diverged at {where}; lower train.lr{now} or set train.clip_grad (e.g. 1.0), "
                     f"then delete {f.out.fold_dir(f.fold)} and retrain; {kept}")  # fmt: skip


def evaluate(
    f: Fold, keeper: averaging.BestKeeper, ema: torch.nn.Module | None,
    activation: Callable[[torch.Tensor], torch.Tensor], amp: tuple[bool, torch.dtype], epoch: int,
) -> dict[str, Any]:  # fmt: skip
    """Score the raw weights and, where it decides something, the EMA's; offer the keeper the EMA's unless the raw
    weights scored better."""
    metric = f.cfg.metric
    probs = predict_probs(f.model, f.valid_loader, f.device, activation, amp)
    if not np.isfinite(probs).all():
        raise diverged(f, f"epoch {epoch + 1} (validation probabilities not finite)", None)
    row: dict[str, Any] = {"epoch": epoch + 1, f"valid_{metric}": score(metric, f.valid_targets, probs)}
    candidate, candidate_probs, value, source = f.model, probs, row[f"valid_{metric}"], "raw"
    if ema is not None and hot_path.ema_scored(epoch, f.cfg.train):
        ema_probs = predict_probs(ema.module, f.valid_loader, f.device, activation, amp)
        if not np.isfinite(ema_probs).all():
            raise diverged(f, f"epoch {epoch + 1} (EMA validation probabilities not finite)", None)
        row[f"valid_{metric}_ema"] = ema_value = score(metric, f.valid_targets, ema_probs)
        if not is_better(metric, value, ema_value):
            candidate, candidate_probs, value, source = ema.module, ema_probs, ema_value, "ema"
    if ema is not None:
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
    if f.sources:  # train.pseudo / train.soft_labels: the source predictions these weights learnt from
        metadata["sources"] = f.sources
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
