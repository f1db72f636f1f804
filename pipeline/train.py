"""train: fine-tune a timm backbone on one fold (or each fold in turn).

Reads data/processed/<comp>/folds.csv and the images under the competition's raw folder; writes, per
fold, data/runs/<comp>/<exp>/fold<k>/: log.csv (one row per epoch), oof_plain.csv (validation-row
probabilities of the final weights, no TTA), and model.safetensors last (the stage's output, with the
config fingerprint in its metadata). While training, fold<k>/work/last.pt holds everything needed to
resume (model, optimizer, scheduler, scaler, RNG states, epoch); re-running the same command resumes
from it, and refuses to when the config changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from pipeline import artifacts, paths
from pipeline.augment import eval_transform, train_transform
from pipeline.cli import config_from_args, folds_from_args
from pipeline.config import TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict
from pipeline.data import encode_targets, read_csv
from pipeline.errors import UserError
from pipeline.loader import ImageDataset, make_loader
from pipeline.metrics import score
from pipeline.model import build_model, data_config, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def activation_for(task: str):  # noqa: ANN201 - a tensor -> tensor callable
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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trained_fingerprint(weights: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return (f.metadata() or {}).get("fingerprint")


@torch.no_grad()
def predict_probs(model: torch.nn.Module, loader, device: torch.device, task: str, amp: tuple[bool, torch.dtype]):  # noqa: ANN001, ANN201
    model.eval()
    activation = activation_for(task)
    outputs = []
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            outputs.append(activation(model(images.to(device, non_blocking=True)).float()).cpu())
    return torch.cat(outputs).numpy()


def train_fold(cfg: Config, fold: int, device: torch.device) -> Path:
    """Train fold `fold` to completion (resuming if a checkpoint exists); return the weights path."""
    out = paths.for_config(cfg)
    fp = fingerprint(cfg, TRAINING_SECTIONS)
    weights = out.weights(fold)
    if weights.exists():
        if trained_fingerprint(weights) == fp:
            log.info("fold %d: already trained (%s), skipping", fold, weights)
            return weights
        raise UserError(
            f"{weights} was trained under a different config; delete {out.fold_dir(fold)} to retrain, "
            "or save the changed config as a new experiment (configs/<comp>/<new>.yaml)"
        )
    table = read_folds(out)
    train_rows, valid_rows = table[table["fold"] != fold], table[table["fold"] == fold]
    if train_rows.empty or valid_rows.empty:
        raise UserError(f"{out.folds_csv}: fold {fold} has no training or no validation rows; rebuild folds")
    seed_everything(cfg.train.seed + fold)

    model = build_model(cfg.model, cfg.num_classes)
    dcfg = data_config(model, cfg.train.image_size)
    raw = paths.raw_dir(cfg.comp)
    train_targets = encode_targets(train_rows["label"], cfg.data)
    valid_targets = encode_targets(valid_rows["label"], cfg.data)
    train_ds = ImageDataset(raw, train_rows["image"], train_targets, train_transform(cfg.augment, dcfg))
    valid_ds = ImageDataset(raw, valid_rows["image"], valid_targets, eval_transform(dcfg))
    bs, workers = cfg.train.batch_size, cfg.train.num_workers
    train_loader = make_loader(train_ds, bs, workers, shuffle=True, device=device, seed=cfg.train.seed + fold)
    valid_loader = make_loader(valid_ds, bs * 2, workers, shuffle=False, device=device)

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.train.opt, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.train.sched,
        num_epochs=cfg.train.epochs,
        warmup_epochs=cfg.train.warmup_epochs,
        min_lr=cfg.train.min_lr,
        warmup_lr=cfg.train.lr * 0.01,
        step_on_epochs=False,
        updates_per_epoch=len(train_loader),
    )
    amp = amp_settings(device, cfg.train.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)
    criterion = loss_for(cfg)

    start_epoch, history = 0, []
    checkpoint = out.checkpoint(fold)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fp:
            raise UserError(
                f"{checkpoint} was made under a different config; delete {out.fold_dir(fold)} to start over, "
                "or restore the config it was made with"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, history = state["epoch"] + 1, json.loads(state["history"])
        log.info("fold %d: resuming from epoch %d (%s)", fold, start_epoch, checkpoint)
    artifacts.write_text(out.resolved_config, dump_yaml(to_dict(cfg)))

    probs = None
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        started, seen, total_loss = time.perf_counter(), 0, 0.0
        for step, (images, targets) in enumerate(train_loader):
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step_update(epoch * len(train_loader) + step + 1)
            seen += len(images)
            total_loss += loss.item() * len(images)
        train_seconds = time.perf_counter() - started
        probs = predict_probs(model, valid_loader, device, cfg.data.task, amp)
        valid_score = score(cfg.metric, valid_targets, probs)
        row = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            f"valid_{cfg.metric}": valid_score,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 2),
            "train_images_per_s": round(seen / max(train_seconds, 1e-9), 1),
        }
        history.append(row)
        log.info(
            "fold %d epoch %d/%d: loss %.4f  valid %s %.4f  (%.0f img/s)",
            fold, epoch + 1, cfg.train.epochs, row["train_loss"], cfg.metric, valid_score, row["train_images_per_s"],
        )  # fmt: skip
        artifacts.write_csv(out.train_log(fold), pd.DataFrame(history))
        artifacts.save_torch(
            checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch,
                "history": json.dumps(history),
                "fingerprint": fp,
            },
        )
    if probs is None:  # resumed after the last epoch's checkpoint: recompute the validation probabilities
        probs = predict_probs(model, valid_loader, device, cfg.data.task, amp)
    oof = pd.DataFrame(probs, columns=cfg.data.classes)
    oof.insert(0, "id", valid_rows["id"].to_numpy())
    artifacts.write_csv(out.fold_dir(fold) / "oof_plain.csv", oof)
    metadata = {
        "fingerprint": fp,
        "model": cfg.model.name,
        "num_classes": str(cfg.num_classes),
        "classes": json.dumps(cfg.data.classes),
        "data_config": json.dumps(dcfg),
        "pretrained_cfg": json.dumps(getattr(model, "pretrained_cfg", {}), default=str),
    }
    artifacts.save_safetensors(weights, model.state_dict(), metadata)  # the stage's output: last
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    return weights


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    device = resolve_device(cfg.device)
    for fold in folds_from_args(args, cfg):
        train_fold(cfg, fold, device)
