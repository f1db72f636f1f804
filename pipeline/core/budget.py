"""Budget-aware defaults: what the null recipe keys become for a run of this many epochs and updates.

Measured by `make bench-recipe` (README "Training recipe"): warmup a small share of the run, EMA averaging over a
share of its updates, augmentation (crop scale, colour jitter) that grows with the number of epochs. Pure
functions of the config; no torch, so augment, recipe and the report can all use them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipeline.core.config import AugmentConfig, Config, TrainConfig

WARMUP_FRACTION = 0.03  # warmup_epochs: null -> this share of the run's epochs, at most MAX_WARMUP_EPOCHS
MAX_WARMUP_EPOCHS = 1.0
EMA_HORIZON = 0.1  # ema_decay: null -> the EMA averages over about this share of the run's optimizer updates
LONG_RUN_EPOCHS = 20  # augmentation reaches its full strength (below) at this many epochs
CROP_SCALE = (0.9, 0.4)  # augment.scale_min: null -> from the first (1-epoch run) to the second (long run)
JITTER = (0.1, 0.3)  # augment.color_jitter: null -> likewise


def augment_strength(epochs: int) -> float:
    """0 for a one-epoch run, rising linearly to 1 at LONG_RUN_EPOCHS: short runs can't use strong augmentation."""
    return min(1.0, max(0.0, (epochs - 1) / (LONG_RUN_EPOCHS - 1)))


def budget_augment(cfg: AugmentConfig, epochs: int) -> AugmentConfig:
    """scale_min and color_jitter left at null get the strength the number of epochs can use."""
    t = augment_strength(epochs)

    def between(pair: tuple[float, float]) -> float:
        return round(pair[0] + (pair[1] - pair[0]) * t, 3)

    scale_min = between(CROP_SCALE) if cfg.scale_min is None else cfg.scale_min
    jitter = between(JITTER) if cfg.color_jitter is None else cfg.color_jitter
    return dataclasses.replace(cfg, scale_min=scale_min, color_jitter=jitter)


def budget_warmup(cfg: TrainConfig, epochs: float) -> float:
    """warmup_epochs, or with null a small share of the run (3 epochs: 0.09 of an epoch; 30 epochs: 0.9)."""
    if cfg.warmup_epochs is not None:
        return min(cfg.warmup_epochs, epochs)
    return min(MAX_WARMUP_EPOCHS, WARMUP_FRACTION * epochs)


def budget_ema_decay(cfg: TrainConfig, total_updates: int) -> float:
    """ema_decay, or with null 1 - 1/(EMA_HORIZON x updates), within 0.9..0.9999 (timm's warmup still applies)."""
    if cfg.ema_decay is not None:
        return cfg.ema_decay
    return float(np.clip(1.0 - 1.0 / max(EMA_HORIZON * total_updates, 1.0), 0.9, 0.9999))


def resolve_budget(cfg: Config) -> Config:
    """A copy of cfg whose budget-aware augmentation (null keys) is filled in from train.epochs."""
    return dataclasses.replace(cfg, augment=budget_augment(cfg.augment, cfg.train.epochs))


def budget_facts(cfg: Config, total_updates: int) -> dict[str, Any]:
    """The values the budget-aware keys resolved to (recorded with the weights)."""
    augment = budget_augment(cfg.augment, cfg.train.epochs)
    facts = {"warmup_epochs": budget_warmup(cfg.train, cfg.train.epochs), "scale_min": augment.scale_min,
             "color_jitter": augment.color_jitter}  # fmt: skip
    if cfg.train.ema:
        facts["ema_decay"] = budget_ema_decay(cfg.train, total_updates)
    return facts
