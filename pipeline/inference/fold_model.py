"""Inference building blocks: a fold's trained model from its weights file, and TTA probabilities over a table.

Reads fold<k>/model.safetensors (refusing files of another config, another shape, or with non-finite values);
writes nothing. predict, the report's per-view scores (pipeline.inference.view_scores) and the Kaggle Kernel call these.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from pipeline.core import artifacts, paths
from pipeline.core.bag import member_config, members
from pipeline.core.config import Config, training_fingerprint
from pipeline.core.errors import UserError
from pipeline.core.progress import len_of_batch, progress
from pipeline.data.augment import eval_transform
from pipeline.data.cache import ImageCache, ResizeOnRead, cache_for, listing_cache
from pipeline.data.loader import ImageDataset, make_loader
from pipeline.data.tables import read_csv
from pipeline.inference.predictions import mean_of_members
from pipeline.inference.tta import predict_views, views_or_identity
from pipeline.inference.tta_auto import effective_views
from pipeline.training.model import build_model
from pipeline.training.runtime import amp_settings, output_activation

log = logging.getLogger(__name__)


def load_fold_model(
    cfg: Config, fold: int, device: torch.device, seed: int | None = None
) -> tuple[torch.nn.Module, dict]:
    """The fold's trained model (no hub access: architecture from timm, weights from the fold's file); `seed`: that
    seed bag member's (fold<k>/seed<s>/), `cfg` then being the member's config (pipeline.core.bag.member_config)."""
    weights = paths.for_config(cfg).member(seed).weights(fold)
    if not weights.exists():
        raise UserError(f"{weights} not found; run `make train CONFIG=...` first")
    retrain = f"delete {weights.parent} and re-run train for fold {fold}"
    try:  # safetensors: a replaced or damaged file can't run code here, only fail to parse
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} is not a safetensors file this pipeline wrote ({exc}); {retrain}") from exc
    broken = [name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if broken:
        raise UserError(f"{weights}: {len(broken)} tensor(s) hold NaN or infinite values (e.g. {broken[0]!r}): "
                        f"training diverged; lower train.lr, then {retrain}")  # fmt: skip
    if meta.get("fingerprint") != training_fingerprint(cfg):
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


def check_finite(probs: np.ndarray, ids: pd.Series, what: str) -> None:
    """Refuse NaN/inf probabilities before any prediction file holds them (a diverged or broken model)."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        example = ids.iloc[int(np.argmax(bad))]
        raise UserError(f"{int(bad.sum())} of {len(probs)} rows got NaN or infinite probabilities ({what}, e.g. id "
                        f"{example!r}): the model diverged; retrain with a lower train.lr")  # fmt: skip


@torch.no_grad()
def predict_table(
    model: torch.nn.Module, cfg: Config, dcfg: dict, table: pd.DataFrame, device: torch.device, views: list[str],
    by_view: bool = False, cache: ImageCache | ResizeOnRead | None = None,
) -> pd.DataFrame:  # fmt: skip
    """id + class probabilities for every row of `table` (id, image), averaged over `views`; with `by_view`, one
    block of rows per view instead (id, view, classes), each image still decoded once. `cache`: where the decoded
    images come from (default: the experiment's current cache, else decoded on reading)."""
    cache = cache if cache is not None else cache_for(cfg, dcfg, build=False)
    dataset = ImageDataset(paths.raw_dir(cfg.comp), table["image"], None, eval_transform(dcfg), cache=cache)
    loader = make_loader(dataset, cfg.train.batch_size * 2, cfg.train.num_workers, device)
    activation = output_activation(cfg)
    enabled, dtype = amp_settings(device, cfg.train.amp, cfg.train.cpu_bf16)
    groups = [[v] for v in views_or_identity(views)] if by_view else [views_or_identity(views)]
    chunks: list[list[np.ndarray]] = [[] for _ in groups]
    for images, _ in progress(loader, total=len(dataset), desc="predict", count=len_of_batch):
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            for group, views in zip(chunks, groups, strict=True):
                group.append(predict_views(model, images, views, activation).cpu().numpy())
    frames = []
    for views, parts in zip(groups, chunks, strict=True):
        probs = np.concatenate(parts) if parts else np.zeros((0, cfg.num_classes), dtype=np.float32)
        check_finite(probs, table["id"], f"TTA view(s) {'+'.join(views)}")
        frame = pd.DataFrame(probs, columns=cfg.data.classes)
        if by_view:
            frame.insert(0, "view", views[0])
        frame.insert(0, "id", table["id"].to_numpy())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if by_view else frames[0]


def predict_test_set(cfg: Config, device: torch.device) -> None:
    """Every fold's test probabilities with TTA into fold<k>/test.csv (what a Kaggle Kernel runs: the OOF rows come
    with the bundle, so only the test listing is predicted); a seed bag's fold: the mean of its members'. The test
    images are decoded once for all the models (folds x seeds) into a test-only cache (pipeline.data.cache)."""
    out = paths.for_config(cfg)
    test = read_csv(out.test_csv, "test listing")
    models, cache = cfg.folds.n_folds * len(members(cfg)), None
    for fold in range(cfg.folds.n_folds):
        probs = []
        for seed in members(cfg):
            member = member_config(cfg, seed)
            model, data_config = load_fold_model(member, fold, device, seed)
            if cache is None and models > 1:  # built at the first model, which resolves the data config
                cache = listing_cache(member, data_config, list(test["image"]))
                if isinstance(cache, ImageCache):
                    log.info("kernel: %d test images decoded once for %d models", len(cache.rows), models)
            probs.append(predict_table(model, member, data_config, test, device, effective_views(cfg), cache=cache))
            del model
        artifacts.write_csv(out.test_probs(fold), mean_of_members(probs, cfg.data.classes, f"fold {fold} test"))
        log.info("kernel: fold %d predicted %d test images on %s (%d model(s))", fold, len(test), device, len(probs))
