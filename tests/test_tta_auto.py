"""`tta.views: auto` keeps the views that help on OOF under a nested guard, and drops one built to hurt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_main, tiny_experiment
from pipeline.metrics import score
from pipeline.tta_auto import choose_views
from test_chain import run_chain, write_competition_yaml


def test_a_view_built_to_hurt_is_dropped() -> None:
    rng = np.random.default_rng(0)
    n, classes = 300, 3
    targets = rng.integers(0, classes, n)
    truth = np.eye(classes)[targets]

    def noisy(strength: float, seed: int) -> np.ndarray:
        logits = truth * 2.0 + np.random.default_rng(seed).normal(0, strength, (n, classes))
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    views = {
        "identity": noisy(1.0, 1),
        "hflip": noisy(1.0, 2),  # as good as identity, independent errors: averaging helps
        "vflip": np.roll(truth, 1, axis=1) * 0.9 + 0.1 / classes,  # confidently wrong: must be dropped
    }
    folds = np.arange(n) % 5
    choice = choose_views(views, targets, folds, "accuracy")
    assert "vflip" not in choice["chosen"] and "hflip" in choice["chosen"]
    assert choice["gain"] > 0 and not choice["fell_back_to_identity"]
    assert all("vflip" not in picked for picked in choice["per_fold_choice"])
    assert choice["identity_cv"] == pytest.approx(score("accuracy", targets, views["identity"]))


def test_no_gain_means_no_tta() -> None:
    targets = np.array([0, 1] * 20)
    perfect = np.eye(2)[targets] * 0.9 + 0.05
    views = {"identity": perfect, "hflip": 1 - perfect}
    choice = choose_views(views, targets, np.arange(40) % 4, "accuracy")
    assert choice["chosen"] == ["identity"]


def test_auto_through_the_chain(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, tta={"views": "auto"})
    run_chain(capsys, config)
    run = project / "data/runs/toy/tiny"
    by_view = pd.read_csv(run / "fold0/oof_by_view.csv")
    assert set(by_view["view"]) == {"identity", "hflip", "vflip", "hvflip"}
    scores = json.loads((run / "scores.json").read_text())
    auto = scores["tta_auto"]
    assert auto["chosen"][0] == "identity" and set(auto["chosen"]) <= set(auto["candidates"])
    assert scores["tta_views"] == auto["chosen"] and "gain" in auto and "nested_cv" in auto
    assert (project / "submissions/toy/tiny.csv").is_file()
    assert run_main(capsys, "predict", "--config", str(config), "--set", "tta.views=sideways").returncode == 2
