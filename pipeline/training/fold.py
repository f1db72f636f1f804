"""One fold's training data: the folds table, the fold's model, loaders and targets, ready for the loop.

Reads data/processed/<comp>/folds.csv and the competition's images (through the cache when built); writes
nothing. train and lr-find prepare their fold here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.core import budget, paths
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.data import loader, soft_targets
from pipeline.data.augment import eval_transform, train_transform
from pipeline.data.cache import cache_for
from pipeline.data.loader import EpochSampler, ImageDataset, make_loader
from pipeline.data.sources import sources_stamp
from pipeline.data.tables import encode_targets, read_csv
from pipeline.training import distributed, optim
from pipeline.training.distributed import World
from pipeline.training.model import build_model, check_progressive_sizes, data_config
from pipeline.training.runtime import seed_everything

log = logging.getLogger(__name__)


def read_folds(out: paths.Paths) -> pd.DataFrame:
    if not out.folds_csv.exists():
        raise UserError(f"{out.folds_csv} not found; run `make folds CONFIG=...` first")
    return read_csv(out.folds_csv, "folds table").astype({"fold": int})


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
    dense_targets: bool = False  # train.pseudo / train.soft_labels: (n, C) weighted soft targets (data.soft_targets)
    sources: str = ""  # their sources' identities (data.sources.sources_stamp), kept beside the fingerprint


def prepare_fold(cfg: Config, fold: int, device: torch.device, fp: str, world: World = distributed.SINGLE,
                 seed: int | None = None) -> Fold:  # fmt: skip
    """Fold `fold`'s data and model; `seed`: the seed bag member it is (cfg is then its member config), whose files
    go to fold<k>/seed<s>/."""
    out = paths.for_config(cfg).member(seed)
    table = read_folds(out)
    train_rows, valid_rows = table[table["fold"] != fold], table[table["fold"] == fold]
    if fold == paths.REFIT:  # the full-data refit: every row trains; fold 0's rows are scored in-sample only
        train_rows, valid_rows = table, table[table["fold"] == 0]
        log.info("refit: training on all %d rows; its validation scores are in-sample (no OOF)", len(table))
    if train_rows.empty or valid_rows.empty:
        raise UserError(f"{out.folds_csv}: fold {fold} has no training or no validation rows; rebuild folds")
    seed = cfg.train.seed + fold
    seed_everything(seed, cfg.train.deterministic)
    cfg = budget.resolve_budget(cfg)  # null augmentation strengths -> the budget's (pipeline.core.budget)
    check_progressive_sizes(cfg.model.name, cfg.train.image_size, cfg.train.progressive_sizes)
    model = build_model(cfg.model, cfg.num_classes, image_size=cfg.train.image_size)
    optim.prepare_model(model, cfg.train)  # head init scale, frozen BatchNorm
    dcfg = data_config(model, cfg.train.image_size)
    raw = paths.raw_dir(cfg.comp)
    valid_targets = encode_targets(valid_rows["label"], cfg.data)
    train_images, train_targets, dataset_targets = train_side(cfg, fold, train_rows)
    cache = cache_for(cfg, dcfg)
    train_ds = ImageDataset(raw, train_images, dataset_targets, train_transform(cfg.augment, dcfg), seed=seed,
                            cache=cache)  # fmt: skip
    valid_ds = ImageDataset(raw, valid_rows["image"], valid_targets, eval_transform(dcfg), cache=cache)
    if cfg.train.sampler == "balanced":
        sampler = loader.BalancedEpochSampler(train_targets, seed, drop_last_batch_of=cfg.train.batch_size)
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
                valid_targets, train_targets, dcfg["input_size"][-1], world, soft_targets.dense_targets_on(cfg),
                sources_stamp(cfg))  # fmt: skip


def train_side(cfg: Config, fold: int, train_rows: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(images, class targets for the sampler and class weights, what the dataset yields): the training rows'
    labels, or with train.pseudo / train.soft_labels their dense targets plus the pseudo rows (training side only)."""
    if not soft_targets.dense_targets_on(cfg):
        targets = encode_targets(train_rows["label"], cfg.data)
        return list(train_rows["image"]), targets, targets
    side = soft_targets.training_set(cfg, train_rows)
    if cfg.train.pseudo.from_:
        log.info("fold %d: %d pseudo-labelled test rows from %s joined the training side (%d labelled rows; %s)",
                 fold, side.pseudo_rows, cfg.train.pseudo.from_, len(train_rows),
                 "soft targets" if cfg.train.pseudo.soft else f"threshold {cfg.train.pseudo.threshold:g}")  # fmt: skip
    if cfg.train.soft_labels.from_:
        log.warning("fold %d: targets distilled from %s's OOF (alpha %g): CV is %s", fold, cfg.train.soft_labels.from_,
                    cfg.train.soft_labels.alpha, soft_targets.CV_NOTES["soft_labels"])  # fmt: skip
    return side.images, side.classes, side.targets


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
