"""predict: out-of-fold and test probabilities of one fold's weights, with test-time augmentation.

Reads fold<k>/model.safetensors, folds.csv and test.csv (data/processed/<comp>/); writes
fold<k>/oof.csv (the fold's validation rows) and then fold<k>/test.csv (every test row), both
`id` + one probability column per class, and last fold<k>/predict.json: the training fingerprint, the views and
the sha256 of the files it vouches for (deleted when a run starts, so a killed run is redone, never skipped).
The same TTA views (tta.views) are applied to both, so OOF scores measure exactly what the test predictions do.
NaN or infinite probabilities (a diverged model) are refused before any file is written. Each image is decoded
once; views are built from the decoded batch. With tta.views auto it predicts every candidate view apart
(fold<k>/oof_by_view.csv + .json, test_by_view.csv) and fills oof.csv/test.csv with the identity view until
ensemble chooses the views and rewrites them (pipeline.inference.tta_auto.effective_views: the views those two
files hold).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core import artifacts, paths
from pipeline.core.config import TRAINING_SECTIONS, Config, fingerprint
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv
from pipeline.inference import view_scores
from pipeline.inference.fold_model import load_fold_model, predict_table
from pipeline.inference.tta import AUTO_CANDIDATES, views_or_identity
from pipeline.inference.tta_auto import effective_views, mean_of_views
from pipeline.training import distributed, refit
from pipeline.training.distributed import World
from pipeline.training.fold import read_folds

log = logging.getLogger(__name__)


def predict_sharded(
    model: torch.nn.Module, cfg: Config, dcfg: dict, table: pd.DataFrame, device: torch.device, views: list[str],
    world: World,
) -> pd.DataFrame | None:  # fmt: skip
    """predict_table over this process's rows (every world.size-th, no padding), gathered in order on rank 0."""
    if not world.active:
        return predict_table(model, cfg, dcfg, table, device, views)
    mine = predict_table(model, cfg, dcfg, table.iloc[distributed.shard_rows(len(table), world)], device, views)
    probs = distributed.gather_rows(mine[cfg.data.classes].to_numpy(), len(table), world)
    if probs is None:
        return None
    frame = pd.DataFrame(probs, columns=cfg.data.classes)
    frame.insert(0, "id", table["id"].to_numpy())
    return frame


def vouched_files(cfg: Config, fold: int) -> list[Path]:
    """The files predict's marker vouches for: its own outputs (under auto the per-view test file; ensemble then
    rewrites oof.csv/test.csv with the chosen views)."""
    out = paths.for_config(cfg)
    return [out.test_by_view(fold)] if cfg.tta.views == "auto" else [out.oof(fold), out.test_probs(fold)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up_to_date(cfg: Config, fold: int, identity: dict[str, Any]) -> bool:
    """The marker matches this config's weights and views, and every file it vouches for is the one it saw."""
    out = paths.for_config(cfg)
    marker = out.predict_marker(fold)
    if not (marker.exists() and out.oof(fold).exists() and out.test_probs(fold).exists()):
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    if {key: recorded.get(key) for key in identity} != identity:
        return False
    refit_fold = fold == refit.REFIT  # has no per-view OOF to cache
    if (
        cfg.tta.views == "auto"
        and not refit_fold
        and not set(AUTO_CANDIDATES) <= set(view_scores.cached_views(cfg, fold))
    ):
        return False
    files = recorded.get("digests", {})
    return all(path.exists() and files.get(path.name) == digest(path) for path in vouched_files(cfg, fold))


def predict_auto(
    model: torch.nn.Module, cfg: Config, dcfg: dict, rows: pd.DataFrame, test: pd.DataFrame, fold: int,
    device: torch.device,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """tta.views auto: every candidate view kept apart (ensemble chooses among them on OOF); returns (oof, test)
    as the mean of the views in use: identity until ensemble has chosen."""
    out, candidates = paths.for_config(cfg), list(AUTO_CANDIDATES)
    views = effective_views(cfg, before_choice=["identity"])
    if fold == refit.REFIT:  # no OOF rows to choose views on: ensemble applies the folds' choice to test_by_view
        oof = pd.DataFrame({"id": rows["id"].to_numpy(), **{c: np.zeros(0) for c in cfg.data.classes}})
    else:
        started = time.perf_counter()
        oof_views = predict_table(model, cfg, dcfg, rows, device, candidates, by_view=True)
        view_scores.write_view_oof(cfg, fold, oof_views, candidates, time.perf_counter() - started, device)
        oof = mean_of_views(oof_views, views, cfg.data.classes)
    test_views = predict_table(model, cfg, dcfg, test, device, candidates, by_view=True)
    artifacts.write_csv(out.test_by_view(fold), test_views)
    return oof, mean_of_views(test_views, views, cfg.data.classes)


def predict_fold(cfg: Config, fold: int, device: torch.device, world: World = distributed.SINGLE) -> None:
    if fold == refit.REFIT:  # its weights were trained under the refit's config; it has no OOF rows (empty oof.csv)
        cfg = refit.refit_config(cfg)
    out = paths.for_config(cfg)
    identity = {"fingerprint": fingerprint(cfg, TRAINING_SECTIONS), "views": views_or_identity(cfg.tta.views)}
    if up_to_date(cfg, fold, identity):
        os.utime(out.test_probs(fold))  # tell Make it is up to date with the config it was checked against
        log.info("fold %d: predictions up to date, skipping", fold)
        return
    model, dcfg = load_fold_model(cfg, fold, device)
    folds = read_folds(out)
    if not out.test_csv.exists():
        raise UserError(f"{out.test_csv} not found; run `make folds CONFIG=...` first")
    test = read_csv(out.test_csv, "test listing")
    rows = folds[folds["fold"] == fold]
    if world.is_main:  # a killed run must not leave a marker vouching for a mix of old and new files
        out.predict_marker(fold).unlink(missing_ok=True)
    if cfg.tta.views == "auto":
        if not world.is_main:  # rank 0 predicts these rows alone
            return
        oof, test_probs = predict_auto(model, cfg, dcfg, rows, test, fold, device)
    else:
        oof = predict_sharded(model, cfg, dcfg, rows, device, identity["views"], world)
        test_probs = predict_sharded(model, cfg, dcfg, test, device, identity["views"], world)
    if not world.is_main:  # rank 0 gathered every row and writes the files
        return
    artifacts.write_csv(out.oof(fold), oof)
    artifacts.write_csv(out.test_probs(fold), test_probs)
    marker = {**identity, "digests": {path.name: digest(path) for path in vouched_files(cfg, fold)}}
    artifacts.write_json(out.predict_marker(fold), marker)  # last: it vouches for the files above
    log.info("fold %d: %d oof + %d test rows, TTA views %s", fold, len(oof), len(test_probs), identity["views"])


def run(args: argparse.Namespace) -> None:
    distributed.run_folds(args, predict_fold)
