"""experiments: one table of every experiment of a competition, to see which change helped.

Reads, for each data/runs/<comp>/<exp>/: config.yaml (the resolved config train writes) and scores.json
(ensemble); and data/runs/<comp>/leaderboard.csv when `make scores` wrote it (optional; columns
experiment, public_score, private_score are used when present). Prints the table, best CV first, and
writes data/runs/<comp>/experiments.csv: experiment, status, metric, cv, fold_mean, fold_std, fold_min,
fold_max, n_folds, holdout, public_score, private_score, then one column per config key whose value
differs between the experiments (dotted names, e.g. model.name, train.lr).
Sweep trials' runs (data/runs/<comp>/<sweep>-tNNN[-sampleN]/, named by a trial yaml under
data/runs/<comp>/sweeps/*/configs/) are left out: they are single-fold tuning runs, listed in the sweep's trials.csv.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.core import artifacts
from pipeline.core.cli import comp_from_args
from pipeline.core.config import Config, flatten, to_dict
from pipeline.core.errors import UserError
from pipeline.core.metrics import goodness
from pipeline.core.paths import Paths
from pipeline.data.tables import read_csv

log = logging.getLogger(__name__)

SCORE_COLUMNS = ["experiment", "status", "metric", "cv", "fold_mean", "fold_std", "fold_min", "fold_max", "n_folds",
                 "holdout"]  # fmt: skip
LEADERBOARD_COLUMNS = ["public_score", "private_score"]
IGNORED_KEYS = ("comp", "exp")  # the run's own location, different by definition


def read_config(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("warning: skipping %s (%s); re-run `make train` for that experiment", path, type(exc).__name__)
        return {}
    return flatten(values) if isinstance(values, dict) else {}


def score_row(run: Path) -> dict[str, Any]:
    """CV and per-fold spread from scores.json; empty scores when the experiment has not been ensembled."""
    row: dict[str, Any] = {"experiment": run.name, "status": "not ensembled yet"}
    path = run / "scores.json"
    if not path.exists():
        return row
    try:
        scores = json.loads(path.read_text())
        folds = np.asarray(scores.get("folds") or [], dtype=float)
        row.update(metric=scores["metric"], cv=float(scores["cv"]), n_folds=len(folds), holdout=scores.get("holdout"))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # one bad file must not hide the others
        log.warning("warning: skipping %s (%s); re-run `make ensemble` for that experiment", path, exc)
        return row
    row["status"] = f"partial: folds {scores.get('folds_used')}" if scores.get("partial") else "scored"
    if len(folds):
        row.update(fold_mean=folds.mean(), fold_std=folds.std(), fold_min=folds.min(), fold_max=folds.max())
    return row


def leaderboard_scores(path: Path) -> pd.DataFrame:
    """experiment -> latest public/private score from leaderboard.csv (newest first, as scores writes it)."""
    empty = pd.DataFrame(columns=["experiment", *LEADERBOARD_COLUMNS])
    if not path.exists():
        return empty
    try:
        table = read_csv(path, "leaderboard")
    except UserError as exc:
        log.warning("warning: ignoring %s (%s)", path, exc)
        return empty
    if "experiment" not in table.columns:
        return empty
    present = [c for c in LEADERBOARD_COLUMNS if c in table.columns]
    for column in present:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table = table.dropna(subset=["experiment"])
    if "date" in table.columns:
        table = table.sort_values("date", ascending=False, kind="stable")
    if present:
        table = table.dropna(subset=present, how="all")  # submissions still scoring, or failed
    return table.drop_duplicates("experiment")[["experiment", *present]].reindex(columns=empty.columns)


def differing_keys(configs: dict[str, dict[str, Any]]) -> list[str]:
    """Dotted config keys whose values are not the same in every experiment.

    A key an older run's config.yaml lacks (added to the code since) counts as its current default, since
    new keys' defaults keep the old behaviour; a key with no default anywhere counts as missing.
    """
    defaults = flatten(to_dict(Config()))
    keys = sorted({k for flat in configs.values() for k in flat} - set(IGNORED_KEYS))
    missing = object()
    return [k for k in keys if len({repr(flat.get(k, defaults.get(k, missing))) for flat in configs.values()}) > 1]


def experiment_table(comp: str) -> pd.DataFrame:
    out = Paths(comp)
    runs = sorted(
        p for p in out.runs.glob("*") if p.is_dir() and ((p / "config.yaml").exists() or (p / "scores.json").exists())
    )
    trials = out.sweep_trial_names()
    left_out = [run for run in runs if re.sub(r"-sample\d+$", "", run.name) in trials]
    runs = [run for run in runs if run not in left_out]
    if left_out:  # single-fold sweep trials are not experiments: `make sweep`'s trials.csv lists them
        log.info("experiments: left out %d sweep trial run(s) (%s...); see data/runs/%s/sweeps/<name>/trials.csv",
                 len(left_out), left_out[0].name, comp)  # fmt: skip
    if not runs:
        raise UserError(
            f"{out.runs}: no experiments yet (no */config.yaml); run `make train CONFIG=configs/{comp}/<exp>.yaml`"
        )
    rows = [score_row(run) for run in runs]
    configs = {run.name: read_config(run / "config.yaml") for run in runs}
    diff = differing_keys(configs) if len(configs) > 1 else []
    table = pd.DataFrame(rows).reindex(columns=SCORE_COLUMNS)
    table = table.merge(leaderboard_scores(out.leaderboard_csv), on="experiment", how="left")
    defaults = flatten(to_dict(Config()))
    for key in diff:
        table[key] = [configs[name].get(key, defaults.get(key)) for name in table["experiment"]]
    table["_best_first"] = [np.nan if pd.isna(cv) else -goodness(metric, cv)
                            for metric, cv in zip(table["metric"], table["cv"], strict=True)]  # fmt: skip
    table = table.sort_values(["_best_first", "experiment"], na_position="last", kind="stable")
    return table.drop(columns=["_best_first"]).reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """Scores to 4 decimals; columns with no value at all (no holdout, nothing submitted) left out."""
    shown = table.dropna(axis=1, how="all").astype(object)
    for column in shown.columns:
        if column in ("cv", "fold_mean", "fold_std", "fold_min", "fold_max", "holdout", *LEADERBOARD_COLUMNS):
            shown[column] = [f"{float(v):.4f}" if pd.notna(v) else "" for v in shown[column]]
        elif column == "n_folds":
            shown[column] = [str(int(v)) if pd.notna(v) else "" for v in shown[column]]
    return shown.fillna("").to_string(index=False)


def run(args: argparse.Namespace) -> None:
    comp = comp_from_args(args)
    table = experiment_table(comp)
    artifacts.write_csv(Paths(comp).experiments_csv, table)
    print(format_table(table))
    log.info("wrote %s", Paths(comp).experiments_csv)
