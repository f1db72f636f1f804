"""scores: this account's Kaggle submissions (public/private scores) joined to the local experiments' CV.

Reads: the competition's submissions from the Kaggle API, and data/runs/<comp>/*/scores.json (metric, cv).
Writes: data/runs/<comp>/leaderboard.csv, one row per submission (newest first) and one per experiment never
submitted, and prints it. A submission belongs to an experiment when its description starts the way
`pipeline.kaggle.submit.describe` writes it (`<exp> | CV ...`); others keep an empty experiment column.

Where you stand: the public leaderboard (`competition_leaderboard_view`, every page) gives each scored submission
the rank its public score would take (`public_rank`), and a line under the table says the rank of the best one,
its gap to the top and to the gold, silver and bronze zones (Kaggle's medal rules for the number of teams). A
leaderboard Kaggle will not show (rules not accepted, a closed competition's) leaves that out with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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
    "public_rank",
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
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("metric", "cv", "public_rank")])


def join_scores(local: pd.DataFrame, remote: pd.DataFrame) -> pd.DataFrame:
    """Submissions (newest first) with their experiment's CV, then experiments never submitted (best CV first)."""
    submitted = remote.merge(local, on="experiment", how="left")
    unsubmitted = local[~local["experiment"].isin(remote["experiment"])]
    best_first = [-goodness(metric, cv) for metric, cv in zip(unsubmitted["metric"], unsubmitted["cv"], strict=True)]
    unsubmitted = unsubmitted.iloc[np.argsort(best_first, kind="stable")]
    parts = [part for part in (submitted, unsubmitted) if not part.empty]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    return table.reindex(columns=COLUMNS)


def medal_zones(teams: int) -> dict[str, int]:
    """The last rank of each medal zone for a competition of `teams` teams (Kaggle's progression rules)."""
    if teams < 100:
        cut = {"gold": math.ceil(0.1 * teams), "silver": math.ceil(0.2 * teams), "bronze": math.ceil(0.4 * teams)}
    elif teams < 250:
        cut = {"gold": 10, "silver": math.ceil(0.2 * teams), "bronze": math.ceil(0.4 * teams)}
    elif teams < 1000:
        cut = {"gold": 10 + teams // 500, "silver": 50, "bronze": 100}
    else:
        cut = {"gold": 10 + teams // 500, "silver": math.ceil(0.05 * teams), "bronze": math.ceil(0.1 * teams)}
    return {medal: max(rank, 1) for medal, rank in cut.items()}


def rank_of(board: list[float], score: float, higher_better: bool) -> int:
    """The rank `score` takes on a public leaderboard of `board` (best first): 1 + the teams strictly ahead."""
    return 1 + sum(1 for other in board if (other > score if higher_better else other < score))


def standing(board: list[float], best: float) -> str:
    """Where `best` (this account's best public score) stands: rank, gap to the top and to each medal zone."""
    higher = board[0] >= board[-1]  # Kaggle lists the best first, whatever the metric's direction
    rank, teams = rank_of(board, best, higher), len(board)
    parts = [f"public rank {rank} of {teams} with {best:g} (top {board[0]:g}, gap {abs(board[0] - best):.5g})"]
    for medal, last in medal_zones(teams).items():
        edge = board[min(last, teams) - 1]
        where = "in it" if rank <= last else f"{abs(edge - best):.5g} to go"
        parts.append(f"{medal} to rank {last} ({edge:g}: {where})")
    return "; ".join(parts)


def add_ranks(table: pd.DataFrame, board: list[float]) -> pd.DataFrame:
    """`public_rank`: the rank each scored submission's public score takes on `board`."""
    if not board:
        return table
    higher = board[0] >= board[-1]
    table = table.copy()
    table["public_rank"] = [rank_of(board, float(score), higher) if pd.notna(score) else pd.NA
                            for score in table["public_score"]]  # fmt: skip
    return table


def public_board(kaggle: object, comp: str) -> list[float]:
    """The public leaderboard's scores, best first; [] (with a warning) when Kaggle will not show it."""
    from pipeline.core.errors import UserError
    from pipeline.kaggle.calls import leaderboard

    try:
        return [score for _, score in leaderboard(kaggle, comp)]
    except UserError as exc:
        log.warning("warning: no public leaderboard rank: %s", exc)
        return []


def run(args: argparse.Namespace) -> None:
    comp = comp_from_args(args)
    from pipeline.kaggle.client import Kaggle  # imports the client: after the arguments are known to be right

    kaggle = Kaggle()
    remote = submission_table(kaggle.submissions(comp))
    board = public_board(kaggle, comp) if not remote.empty else []
    out = Paths(comp)
    table = add_ranks(join_scores(local_scores(out.runs), remote), board)
    write_csv(out.leaderboard_csv, table)
    if table.empty:
        print(f"{comp}: no submissions and no scored experiments yet")
    else:
        shown = table.drop(columns=["description"]).fillna("")
        print(shown.to_string(index=False))
    scored = remote["public_score"].dropna()
    if board and not scored.empty:
        best = scored.max() if board[0] >= board[-1] else scored.min()
        print(f"{comp}: {standing(board, float(best))}")
    log.info("wrote %s", out.leaderboard_csv)
