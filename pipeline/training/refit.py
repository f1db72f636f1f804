"""The full-data refit (`make refit`): one model on every training row, for as many epochs as the folds justify.

Reads each fold's fold<k>/model.safetensors metadata (the epoch its saved weights come from); writes nothing.
`refit_config` turns an experiment's config into the refit's: train.epochs is the median over folds of the saved
epoch under keep: best (rounded half up), or train.epochs itself under keep: last; keep becomes last and early
stopping off (there is no validation fold to choose an epoch on). The train stage applies it for fold id
paths.REFIT, so the refit's weights carry the fingerprint of this config and resume like a fold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from typing import Any

from safetensors import safe_open

from pipeline.core import paths
from pipeline.core.bag import first_member, member_config, members
from pipeline.core.config import Config, training_fingerprint
from pipeline.core.errors import UserError

REFIT = paths.REFIT


def saved_epochs(cfg: Config) -> list[int]:
    """The epoch each fold's saved weights come from (fold weights' `recipe` metadata); a seed bag: each member's,
    fold by fold."""
    epochs = []
    for fold in range(cfg.folds.n_folds):
        for seed in members(cfg):
            epochs.append(_saved_epoch(member_config(cfg, seed), fold, seed))
    return epochs


def _saved_epoch(cfg: Config, fold: int, seed: int | None) -> int:
    """The epoch fold `fold`'s (member `seed`'s) saved weights come from; `cfg` is the member's config."""
    out = paths.for_config(cfg).member(seed)
    expected = training_fingerprint(cfg)
    weights = out.weights(fold)
    if not weights.exists():
        raise UserError(f"{weights} not found; the refit's epoch count comes from the folds: run "
                        "`make train CONFIG=...` first")  # fmt: skip
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("fingerprint") != expected:
        raise UserError(
            f"{weights} was trained under a different config, so its epoch can't size the refit; "
            "retrain the folds (make train CONFIG=...) or restore the config they were trained with"
        )
    recipe = json.loads(meta.get("recipe", "{}"))
    if not recipe.get("epoch"):
        raise UserError(f"{weights}: no saved epoch in its metadata; retrain fold {fold}")
    return int(recipe["epoch"])


def refit_plan(cfg: Config) -> dict[str, Any]:
    """How many epochs the refit trains and why: {epochs, rule, fold_epochs}."""
    if cfg.train.keep == "last":
        return {"epochs": cfg.train.epochs, "rule": "train.epochs (keep: last)", "fold_epochs": None}
    fold_epochs = saved_epochs(cfg)
    median = statistics.median(fold_epochs)
    return {"epochs": max(1, math.floor(median + 0.5)), "rule": "median best epoch over folds (keep: best)",
            "fold_epochs": fold_epochs}  # fmt: skip


def refit_config(cfg: Config) -> Config:
    """The config the refit trains under: the plan's epochs, keep: last, no early stopping, no longer freezing than
    it trains. A seed bag refits once, with its first seed (one full-data model, not a bag of them)."""
    epochs = refit_plan(cfg)["epochs"]
    cfg = first_member(cfg)
    train = dataclasses.replace(cfg.train, epochs=epochs, keep="last", early_stopping=0,
                                freeze_epochs=min(cfg.train.freeze_epochs, epochs - 1))  # fmt: skip
    return dataclasses.replace(cfg, train=train)
