"""train: fine-tune a timm backbone on one fold (or each fold in turn).

Reads data/processed/<comp>/folds.csv and the images under the competition's raw folder; writes, per
fold, data/runs/<comp>/<exp>/fold<k>/: log.csv (one row per epoch), oof_plain.csv (validation-row
probabilities of the final weights, no TTA), and model.safetensors last (the stage's output, with the
config fingerprint in its metadata). While training, fold<k>/work/last.pt holds everything needed to
resume (pipeline.checkpoint); re-running the same command resumes from it, and refuses to when the
config changed. SIGTERM/SIGINT and train.time_budget save a checkpoint and stop (exit 75).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from pipeline import artifacts, checkpoint, paths
from pipeline.augment import eval_transform, train_transform
from pipeline.cli import config_from_args, folds_from_args
from pipeline.config import TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict
from pipeline.data import encode_targets, read_csv
from pipeline.errors import UserError
from pipeline.loader import EpochSampler, ImageDataset, make_loader
from pipeline.metrics import score
from pipeline.model import build_model, data_config, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def activation_for(task: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.sigmoid if task == "multi_label" else (lambda logits: logits.softmax(dim=1))


def loss_for(cfg: Config) -> torch.nn.Module:
    if cfg.data.task == "multi_label":
        return torch.nn.BCEWithLogitsLoss()
    return torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)


def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype]:
    """AMP only on CUDA: bf16 where the GPU supports it (no scaler needed), else fp16 with a GradScaler."""
    if not enabled or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def read_folds(out: paths.Paths) -> pd.DataFrame:
    if not out.folds_csv.exists():
        raise UserError(f"{out.folds_csv} not found; run `make folds CONFIG=...` first")
    return read_csv(out.folds_csv, "folds table").astype({"fold": int})


def trained_fingerprint(weights: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return (f.metadata() or {}).get("fingerprint")


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, task: str,
    amp: tuple[bool, torch.dtype],
) -> np.ndarray:  # fmt: skip
    model.eval()
    activation = activation_for(task)
    outputs = []
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            outputs.append(activation(model(images.to(device, non_blocking=True)).float()).cpu())
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


def prepare_fold(cfg: Config, fold: int, device: torch.device, fp: str) -> Fold:
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
    train_ds = ImageDataset(raw, train_rows["image"], encode_targets(train_rows["label"], cfg.data),
                            train_transform(cfg.augment, dcfg), seed=seed)  # fmt: skip
    valid_ds = ImageDataset(raw, valid_rows["image"], valid_targets, eval_transform(dcfg))
    sampler = EpochSampler(len(train_ds), seed, drop_last_batch_of=cfg.train.batch_size)
    workers = cfg.train.num_workers
    train_loader = make_loader(train_ds, cfg.train.batch_size, workers, device, sampler=sampler)
    valid_loader = make_loader(valid_ds, cfg.train.batch_size * 2, workers, device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return Fold(cfg, fold, device, out, fp, model, dcfg, train_loader, valid_loader, sampler, valid_rows, valid_targets)


def train_fold(cfg: Config, fold: int, device: torch.device) -> Path:
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
    f = prepare_fold(cfg, fold, device, fp)
    optimizer = create_optimizer_v2(f.model, opt=cfg.train.opt, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    steps_per_epoch = len(f.sampler.order()) // cfg.train.batch_size + bool(len(f.sampler.order()) % cfg.train.batch_size)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.train.sched, num_epochs=cfg.train.epochs, warmup_epochs=cfg.train.warmup_epochs,
        min_lr=cfg.train.min_lr, warmup_lr=cfg.train.lr * 0.01, step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )  # fmt: skip
    amp = amp_settings(device, cfg.train.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)
    criterion = loss_for(cfg)

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
        checkpoint.set_rng_state(state["rng"])
        epoch, step, history = state["epoch"], state["step"], json.loads(state["history"])
        partial = json.loads(state["partial"])
        log.info("fold %d: resuming from epoch %d step %d (%s)", fold, epoch, step, ckpt)
    artifacts.write_text(out.resolved_config, dump_yaml(to_dict(cfg)))

    def save_state(next_epoch: int, next_step: int) -> None:
        checkpoint.save(
            ckpt, model=f.model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(), epoch=next_epoch, step=next_step, history=json.dumps(history),
            partial=json.dumps(partial), fingerprint=fp,
        )  # fmt: skip

    probs = None
    with checkpoint.StopFlag(checkpoint.parse_budget(cfg.train.time_budget)) as stop:
        while epoch < cfg.train.epochs:
            f.model.train()
            f.sampler.set_epoch(epoch, skip=step * cfg.train.batch_size)
            started = time.perf_counter()
            for images, targets in f.train_loader:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                    loss = criterion(f.model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                scheduler.step_update(epoch * steps_per_epoch + step)
                partial["seen"] += len(images)
                partial["loss"] += loss.item() * len(images)
                every = cfg.train.checkpoint_every
                if stop.should_stop() or (every and step % every == 0 and step < steps_per_epoch):
                    partial["seconds"] += time.perf_counter() - started
                    started = time.perf_counter()
                    save_state(epoch, step)
                    if stop.reason:
                        raise checkpoint.Stopped(f"fold {fold}: stopped ({stop.reason}) at epoch {epoch + 1} step "
                                                 f"{step}; checkpoint {ckpt}; re-run the same command to resume")  # fmt: skip
            partial["seconds"] += time.perf_counter() - started
            probs = predict_probs(f.model, f.valid_loader, device, cfg.data.task, amp)
            valid_score = score(cfg.metric, f.valid_targets, probs)
            row = {
                "epoch": epoch + 1,
                "train_loss": partial["loss"] / max(partial["seen"], 1),
                f"valid_{cfg.metric}": valid_score,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(partial["seconds"], 2),
                "train_images_per_s": round(partial["seen"] / max(partial["seconds"], 1e-9), 1),
            }
            history.append(row)
            log.info("fold %d epoch %d/%d: loss %.4f  valid %s %.4f  (%.0f img/s)", fold, epoch + 1,
                     cfg.train.epochs, row["train_loss"], cfg.metric, valid_score, row["train_images_per_s"])  # fmt: skip
            artifacts.write_csv(out.train_log(fold), pd.DataFrame(history))
            epoch, step, partial = epoch + 1, 0, {"seen": 0, "loss": 0.0, "seconds": 0.0}
            save_state(epoch, step)
            if stop.should_stop() and epoch < cfg.train.epochs:
                raise checkpoint.Stopped(f"fold {fold}: stopped ({stop.reason}) after epoch {epoch}; "
                                         f"checkpoint {ckpt}; re-run the same command to resume")  # fmt: skip
    if probs is None:  # resumed after the last epoch's checkpoint: recompute the validation probabilities
        probs = predict_probs(f.model, f.valid_loader, device, cfg.data.task, amp)
    finish_fold(f, probs)
    shutil.rmtree(ckpt.parent, ignore_errors=True)
    return weights


def finish_fold(f: Fold, probs: np.ndarray) -> None:
    """Write the validation probabilities, then the weights with their provenance (the stage's output, last)."""
    oof = pd.DataFrame(probs, columns=f.cfg.data.classes)
    oof.insert(0, "id", f.valid_rows["id"].to_numpy())
    artifacts.write_csv(f.out.fold_dir(f.fold) / "oof_plain.csv", oof)
    metadata = {
        "fingerprint": f.fingerprint,
        "model": f.cfg.model.name,
        "num_classes": str(f.cfg.num_classes),
        "classes": json.dumps(f.cfg.data.classes),
        "data_config": json.dumps(f.data_config),
        "pretrained_cfg": json.dumps(getattr(f.model, "pretrained_cfg", {}), default=str),
        "fold": str(f.fold),
    }
    artifacts.save_safetensors(f.out.weights(f.fold), f.model.state_dict(), metadata)


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    device = resolve_device(cfg.device)
    for fold in folds_from_args(args, cfg):
        train_fold(cfg, fold, device)
