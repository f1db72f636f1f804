"""One truth per concept: score direction from pipeline.core.metrics wherever scores are sorted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.kaggle.leaderboard import join_scores, local_scores
from pipeline.reporting.experiments import experiment_table


def _scored(run: Path, metric: str, cv: float) -> None:
    run.mkdir(parents=True)
    (run / "scores.json").write_text(json.dumps({"metric": metric, "cv": cv, "folds": [cv, cv]}))
    (run / "config.yaml").write_text("model:\n  name: test_efficientnet\n")


def test_lower_is_better_metrics_sort_best_first(project: Path) -> None:
    runs = project / "data/runs/toy"
    for name, cv in (("good", 0.2), ("bad", 0.9), ("middling", 0.5)):
        _scored(runs / name, "log_loss", cv)
    remote = pd.DataFrame(columns=["experiment", "public_score", "private_score", "status", "date", "submission_id"])
    leaderboard = join_scores(local_scores(runs), remote)
    assert list(leaderboard["experiment"]) == ["good", "middling", "bad"]
    assert list(experiment_table("toy")["experiment"]) == ["good", "middling", "bad"]
