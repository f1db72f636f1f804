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
A seed bag (train.seeds, pipeline.core.bag) predicts each member into fold<k>/seed<s>/ (the same files, its own
marker), then writes the fold's files as the members' mean (per view under auto) and last the fold's predict.json,
which vouches for the members' files too.
"""

from __future__ import annotations

import argparse
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
from pipeline.core.bag import bag_seeds, describe, member_config
from pipeline.core.config import Config, training_fingerprint
from pipeline.core.errors import UserError
from pipeline.core.provenance import code_version
from pipeline.data.tables import read_csv
from pipeline.inference import view_scores
from pipeline.inference.fold_model import load_fold_model, predict_table
from pipeline.inference.predictions import mean_of_members
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


def vouched_files(cfg: Config, fold: int, seed: int | None = None) -> list[Path]:
    """The files predict's marker vouches for: its own outputs (under auto the per-view test file; ensemble then
    rewrites oof.csv/test.csv with the chosen views); a seed bag's fold: its own and every member's."""
    out = paths.for_config(cfg).member(seed)
    own = [out.test_by_view(fold)] if cfg.tta.views == "auto" else [out.oof(fold), out.test_probs(fold)]
    bag = bag_seeds(cfg) if fold != refit.REFIT else []
    return own + [path for s in bag for path in vouched_files(member_config(cfg, s), fold, s)]


def digests(cfg: Config, fold: int, seed: int | None = None) -> dict[str, str]:
    """sha256 of each vouched file, by its path under the fold's folder (`oof.csv`, a member's `seed43/oof.csv`)."""
    root = paths.for_config(cfg).member(seed).fold_dir(fold)
    return {path.relative_to(root).as_posix(): artifacts.file_digest(path) for path in vouched_files(cfg, fold, seed)}


def up_to_date(cfg: Config, fold: int, identity: dict[str, Any], seed: int | None = None) -> bool:
    """The marker matches this config's weights and views, and every file it vouches for is the one it saw."""
    out = paths.for_config(cfg).member(seed)
    marker = out.predict_marker(fold)
    if not (marker.exists() and out.oof(fold).exists() and out.test_probs(fold).exists()):
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    if {key: recorded.get(key) for key in identity} != identity:
        return False
    if recorded.get("code", "unrecorded") != code_version():  # other code may predict differently (TTA, activation)
        return False
    refit_fold = fold == refit.REFIT  # has no per-view OOF to cache
    if (
        cfg.tta.views == "auto"
        and not refit_fold
        and not set(AUTO_CANDIDATES) <= set(view_scores.cached_views(cfg, fold, seed))
    ):
        return False
    files, root = recorded.get("digests", {}), out.fold_dir(fold)
    return all(path.exists() and files.get(path.relative_to(root).as_posix()) == artifacts.file_digest(path)
               for path in vouched_files(cfg, fold, seed))  # fmt: skip


def predict_auto(
    model: torch.nn.Module, cfg: Config, dcfg: dict, rows: pd.DataFrame, test: pd.DataFrame, fold: int,
    device: torch.device, seed: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """tta.views auto: every candidate view kept apart (ensemble chooses among them on OOF); returns (oof, test)
    as the mean of the views in use: identity until ensemble has chosen."""
    out, candidates = paths.for_config(cfg).member(seed), list(AUTO_CANDIDATES)
    views = effective_views(cfg, before_choice=["identity"])
    if fold == refit.REFIT:  # no OOF rows to choose views on: ensemble applies the folds' choice to test_by_view
        oof = pd.DataFrame({"id": rows["id"].to_numpy(), **{c: np.zeros(0) for c in cfg.data.classes}})
    else:
        started = time.perf_counter()
        oof_views = predict_table(model, cfg, dcfg, rows, device, candidates, by_view=True)
        view_scores.write_view_oof(cfg, fold, oof_views, candidates, time.perf_counter() - started, device, seed)
        oof = mean_of_views(oof_views, views, cfg.data.classes)
    test_views = predict_table(model, cfg, dcfg, test, device, candidates, by_view=True)
    artifacts.write_csv(out.test_by_view(fold), test_views)
    return oof, mean_of_views(test_views, views, cfg.data.classes)


def identity_of(cfg: Config) -> dict[str, Any]:
    """What predictions depend on: the training fingerprint and the views (a seed bag's: the whole list's)."""
    return {"fingerprint": training_fingerprint(cfg), "views": views_or_identity(cfg.tta.views)}


def write_outputs(cfg: Config, fold: int, oof: pd.DataFrame, test_probs: pd.DataFrame, seed: int | None = None) -> None:
    """oof.csv, test.csv, then the marker vouching for them (and, for a bag's fold, for its members' files)."""
    out = paths.for_config(cfg).member(seed)
    artifacts.write_csv(out.oof(fold), oof)
    artifacts.write_csv(out.test_probs(fold), test_probs)
    marker = {**identity_of(cfg), "digests": digests(cfg, fold, seed), "code": code_version()}
    artifacts.write_json(out.predict_marker(fold), marker)  # last: it vouches for the files above


def predict_model(cfg: Config, fold: int, device: torch.device, world: World, seed: int | None = None) -> None:
    """One model's predictions: fold `fold`'s, or its seed bag member `seed`'s (cfg: the member's config)."""
    out = paths.for_config(cfg).member(seed)
    identity = identity_of(cfg)
    if up_to_date(cfg, fold, identity, seed):
        os.utime(out.test_probs(fold))  # tell Make it is up to date with the config it was checked against
        log.info("%s: predictions up to date, skipping", describe(fold, seed))
        return
    model, dcfg = load_fold_model(cfg, fold, device, seed)
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
        oof, test_probs = predict_auto(model, cfg, dcfg, rows, test, fold, device, seed)
    else:
        oof = predict_sharded(model, cfg, dcfg, rows, device, identity["views"], world)
        test_probs = predict_sharded(model, cfg, dcfg, test, device, identity["views"], world)
    if not world.is_main:  # rank 0 gathered every row and writes the files
        return
    write_outputs(cfg, fold, oof, test_probs, seed)
    log.info("%s: %d oof + %d test rows, TTA views %s", describe(fold, seed), len(oof), len(test_probs),
             identity["views"])  # fmt: skip


def average_members(cfg: Config, fold: int, seeds: list[int]) -> None:
    """A seed bag's fold files: the mean of its members' probabilities (per view under auto: fold<k>/oof_by_view.csv
    and test_by_view.csv, so ensemble chooses views on the bag), then the marker vouching for all of them."""
    out, classes = paths.for_config(cfg), cfg.data.classes
    if up_to_date(cfg, fold, identity_of(cfg)):
        os.utime(out.test_probs(fold))
        log.info("fold %d: seed bag %s up to date, skipping", fold, seeds)
        return
    out.predict_marker(fold).unlink(missing_ok=True)
    floats = {c: float for c in classes}

    def mean(name: str, what: str) -> pd.DataFrame:
        files = [getattr(out.member(s), name)(fold) for s in seeds]
        return mean_of_members([read_csv(f, what).astype(floats) for f in files], classes, f"fold {fold} {what}")

    if cfg.tta.views == "auto":
        stamps = [json.loads(out.member(s).oof_by_view_stamp(fold).read_text()) for s in seeds]
        oof_views = mean("oof_by_view", "per-view OOF")
        view_scores.write_view_oof(cfg, fold, oof_views, stamps[0]["views"], sum(st["seconds"] for st in stamps),
                                   torch.device(stamps[0]["device"]))  # fmt: skip
        test_views = mean("test_by_view", "per-view test probabilities")
        artifacts.write_csv(out.test_by_view(fold), test_views)
        views = effective_views(cfg, before_choice=["identity"])
        oof, test_probs = mean_of_views(oof_views, views, classes), mean_of_views(test_views, views, classes)
    else:
        oof, test_probs = mean("oof", "OOF probabilities"), mean("test_probs", "test probabilities")
    write_outputs(cfg, fold, oof, test_probs)
    log.info("fold %d: seed bag of %d members %s averaged: %d oof + %d test rows", fold, len(seeds), seeds, len(oof),
             len(test_probs))  # fmt: skip


def predict_fold(cfg: Config, fold: int, device: torch.device, world: World = distributed.SINGLE) -> None:
    """Fold `fold`'s predictions; a seed bag's: each member's in its folder, then their mean in the fold's."""
    if fold == refit.REFIT:  # its weights were trained under the refit's config; it has no OOF rows (empty oof.csv)
        predict_model(refit.refit_config(cfg), fold, device, world)
        return
    seeds = bag_seeds(cfg)
    if not seeds:
        predict_model(cfg, fold, device, world)
        return
    for seed in seeds:
        predict_model(member_config(cfg, seed), fold, device, world, seed)
    if world.is_main:
        average_members(cfg, fold, seeds)
    distributed.barrier(world)


def run(args: argparse.Namespace) -> None:
    distributed.run_folds(args, predict_fold)
