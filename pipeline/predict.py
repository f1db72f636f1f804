"""predict: out-of-fold and test probabilities of one fold's weights, with test-time augmentation.

Reads fold<k>/model.safetensors, folds.csv and test.csv (data/processed/<comp>/); writes
fold<k>/oof.csv (the fold's validation rows) and then fold<k>/test.csv (every test row), both
`id` + one probability column per class. The same TTA views (tta.views) are applied to both, so OOF
scores measure exactly what the test predictions do. Each image is decoded once; views are built from
the decoded batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pipeline import artifacts, distributed, paths
from pipeline.augment import eval_transform
from pipeline.cache import cache_for
from pipeline.config import TRAINING_SECTIONS, Config, fingerprint
from pipeline.data import read_csv
from pipeline.distributed import World
from pipeline.errors import UserError
from pipeline.loader import ImageDataset, make_loader
from pipeline.model import build_model
from pipeline.progress import len_of_batch, progress
from pipeline.train import amp_settings, output_activation, read_folds
from pipeline.tta import predict_views, views_or_identity

log = logging.getLogger(__name__)


def load_fold_model(cfg: Config, fold: int, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The fold's trained model (no hub access: architecture from timm, weights from the fold's file)."""
    weights = paths.for_config(cfg).weights(fold)
    if not weights.exists():
        raise UserError(f"{weights} not found; run `make train CONFIG=...` first")
    retrain = f"delete {weights.parent} and re-run train for fold {fold}"
    try:  # safetensors: a replaced or damaged file can't run code here, only fail to parse
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} is not a safetensors file this pipeline wrote ({exc}); {retrain}") from exc
    if meta.get("fingerprint") != fingerprint(cfg, TRAINING_SECTIONS):
        raise UserError(f"{weights} was trained under a different config; retrain it or restore that config")
    model = build_model(cfg.model, cfg.num_classes, pretrained=False, image_size=cfg.train.image_size)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape, e.g. another class count
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UserError(
            f"{weights} does not fit {cfg.model.name} with {cfg.num_classes} classes ({detail[:160]}); {retrain}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise UserError(
            f"{weights} does not fit {cfg.model.name} with {cfg.num_classes} classes ({len(result.missing_keys)} "
            f"tensors missing, {len(result.unexpected_keys)} unexpected, e.g. {example!r}); {retrain}"
        )
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, json.loads(meta["data_config"])


@torch.no_grad()
def predict_table(
    model: torch.nn.Module, cfg: Config, dcfg: dict, table: pd.DataFrame, device: torch.device, by_view: bool = False
) -> pd.DataFrame:
    """id + class probabilities for every row of `table` (id, image), averaged over the TTA views; with
    `by_view`, one block of rows per view instead (id, view, classes), each image still decoded once."""
    dataset = ImageDataset(paths.raw_dir(cfg.comp), table["image"], None, eval_transform(dcfg),
                           cache=cache_for(cfg, dcfg, build=False))  # fmt: skip
    loader = make_loader(dataset, cfg.train.batch_size * 2, cfg.train.num_workers, device)
    activation = output_activation(cfg)
    enabled, dtype = amp_settings(device, cfg.train.amp, cfg.train.cpu_bf16)
    groups = [[v] for v in views_or_identity(cfg.tta.views)] if by_view else [views_or_identity(cfg.tta.views)]
    chunks: list[list[np.ndarray]] = [[] for _ in groups]
    for images, _ in progress(loader, total=len(dataset), desc="predict", count=len_of_batch):
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            for group, views in zip(chunks, groups, strict=True):
                group.append(predict_views(model, images, views, activation).cpu().numpy())
    frames = []
    for views, parts in zip(groups, chunks, strict=True):
        probs = np.concatenate(parts) if parts else np.zeros((0, cfg.num_classes), dtype=np.float32)
        frame = pd.DataFrame(probs, columns=cfg.data.classes)
        if by_view:
            frame.insert(0, "view", views[0])
        frame.insert(0, "id", table["id"].to_numpy())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if by_view else frames[0]


def predict_sharded(
    model: torch.nn.Module, cfg: Config, dcfg: dict, table: pd.DataFrame, device: torch.device, world: World
) -> pd.DataFrame | None:
    """predict_table over this process's rows (every world.size-th, no padding), gathered in order on rank 0."""
    if not world.active:
        return predict_table(model, cfg, dcfg, table, device)
    mine = predict_table(model, cfg, dcfg, table.iloc[distributed.shard_rows(len(table), world)], device)
    probs = distributed.gather_rows(mine[cfg.data.classes].to_numpy(), len(table), world)
    if probs is None:
        return None
    frame = pd.DataFrame(probs, columns=cfg.data.classes)
    frame.insert(0, "id", table["id"].to_numpy())
    return frame


def predict_fold(cfg: Config, fold: int, device: torch.device, world: World = distributed.SINGLE) -> None:
    out = paths.for_config(cfg)
    stamp = out.fold_dir(fold) / "predict.json"
    identity = {"fingerprint": fingerprint(cfg, TRAINING_SECTIONS), "views": views_or_identity(cfg.tta.views)}
    if out.test_probs(fold).exists() and stamp.exists() and json.loads(stamp.read_text()) == identity:
        os.utime(out.test_probs(fold))  # tell Make it is up to date with the config it was checked against
        log.info("fold %d: predictions up to date, skipping", fold)
        return
    model, dcfg = load_fold_model(cfg, fold, device)
    folds = read_folds(out)
    if not out.test_csv.exists():
        raise UserError(f"{out.test_csv} not found; run `make folds CONFIG=...` first")
    test = read_csv(out.test_csv, "test listing")
    if cfg.tta.views == "auto":  # every candidate view kept apart; ensemble chooses among them on OOF
        if not world.is_main:  # rank 0 predicts these rows alone
            return
        oof_views = predict_table(model, cfg, dcfg, folds[folds["fold"] == fold], device, by_view=True)
        test_views = predict_table(model, cfg, dcfg, test, device, by_view=True)
        artifacts.write_csv(out.oof_by_view(fold), oof_views)
        artifacts.write_csv(out.test_by_view(fold), test_views)
        classes = cfg.data.classes
        oof = oof_views.groupby("id", sort=False)[classes].mean().reset_index()
        test_probs = test_views.groupby("id", sort=False)[classes].mean().reset_index()
    else:
        oof = predict_sharded(model, cfg, dcfg, folds[folds["fold"] == fold], device, world)
        test_probs = predict_sharded(model, cfg, dcfg, test, device, world)
    if not world.is_main:  # rank 0 gathered every row and writes the files
        return
    artifacts.write_csv(out.oof(fold), oof)
    artifacts.write_json(stamp, identity)
    artifacts.write_csv(out.test_probs(fold), test_probs)  # the stage's output: last
    log.info("fold %d: %d oof + %d test rows, TTA views %s", fold, len(oof), len(test_probs), identity["views"])


def run(args: argparse.Namespace) -> None:
    distributed.run_folds(args, predict_fold)
