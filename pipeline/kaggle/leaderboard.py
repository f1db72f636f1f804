"""scores: this account's Kaggle submissions (public/private scores) joined to the local experiments' CV.

Reads: the competition's submissions from the Kaggle API, and data/runs/<comp>/*/scores.json (metric, cv).
Writes: data/runs/<comp>/leaderboard.csv, one row per submission (newest first) and one per experiment never
submitted, and prints it. A submission belongs to an experiment when its description starts the way
`pipeline.kaggle.submit.describe` writes it (`<exp> | CV ...`); others keep an empty experiment column.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.artifacts import write_csv
from pipeline.core.cli import comp_from_args
from pipeline.core.metrics import goodness
from pipeline.core.paths import Paths
from pipeline.core.provenance import experiment_from_description

log = logging.getLogger(__name__)

COLUMNS = [
    "experiment",
    "metric",
    "cv",
    "public_score",
    "private_score",
    "status",
    "error",
    "date",
    "submission_id",
    "description",
]


def local_scores(runs: Path) -> pd.DataFrame:
    """experiment, metric, cv for every data/runs/<comp>/<exp>/scores.json that can be read."""
    rows = []
    for path in sorted(runs.glob("*/scores.json")):
        try:
            scores = json.loads(path.read_text())
            rows.append({"experiment": path.parent.name, "metric": scores["metric"], "cv": float(scores["cv"])})
        except (OSError, ValueError, KeyError, TypeError) as exc:  # one bad file must not hide the others
            log.warning("warning: skipping %s (%s); re-run `make ensemble` for that experiment", path, exc)
    return pd.DataFrame(rows, columns=["experiment", "metric", "cv"])


def submission_table(submissions: list[Any]) -> pd.DataFrame:
    """One row per ApiSubmission, with the experiment read back from its description."""
    rows = []
    for item in submissions:
        date = getattr(item, "date", None)
        status = getattr(item, "status", None)
        rows.append(
            {
                "experiment": experiment_from_description(item.description),
                "public_score": pd.to_numeric(item.public_score or None, errors="coerce"),
                "private_score": pd.to_numeric(item.private_score or None, errors="coerce"),
                "status": status.name.lower() if status is not None else "",
                "error": getattr(item, "error_description", None) or "",  # why Kaggle could not score it
                "date": date.isoformat(timespec="seconds") if date is not None else "",
                "submission_id": item.ref,
                "description": item.description or "",
            }
        )
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("metric", "cv")])


def join_scores(local: pd.DataFrame, remote: pd.DataFrame) -> pd.DataFrame:
    """Submissions (newest first) with their experiment's CV, then experiments never submitted (best CV first)."""
    submitted = remote.merge(local, on="experiment", how="left")
    unsubmitted = local[~local["experiment"].isin(remote["experiment"])]
    best_first = [-goodness(metric, cv) for metric, cv in zip(unsubmitted["metric"], unsubmitted["cv"], strict=True)]
    unsubmitted = unsubmitted.iloc[np.argsort(best_first, kind="stable")]
    parts = [part for part in (submitted, unsubmitted) if not part.empty]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return table.reindex(columns=COLUMNS)


def run(args: argparse.Namespace) -> None:
    comp = comp_from_args(args)
    from pipeline.kaggle.client import Kaggle  # imports the client: after the arguments are known to be right

    remote = submission_table(Kaggle().submissions(comp))
    out = Paths(comp)
    table = join_scores(local_scores(out.runs), remote)
    write_csv(out.leaderboard_csv, table)
    if table.empty:
        print(f"{comp}: no submissions and no scored experiments yet")
    else:
        shown = table.drop(columns=["description"]).fillna("")
        print(shown.to_string(index=False))
    log.info("wrote %s", out.leaderboard_csv)
