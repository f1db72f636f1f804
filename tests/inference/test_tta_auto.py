"""`tta.views: auto` keeps the views that help on OOF under a nested guard, and drops one built to hurt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.builders import run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core.metrics import score
from pipeline.inference.tta_auto import choose_views


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


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
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
    # one truth: the fold files hold the chosen views, and every reader names those
    classes = [c for c in pd.read_csv(run / "fold0/oof.csv").columns if c != "id"]
    for name in ("oof", "test"):
        per_view = pd.read_csv(run / f"fold0/{name}_by_view.csv", dtype={"id": str})
        chosen = per_view[per_view["view"].isin(auto["chosen"])].groupby("id", sort=False)[classes].mean()
        held = pd.read_csv(run / f"fold0/{name}.csv", dtype={"id": str}).set_index("id")
        np.testing.assert_allclose(held.loc[chosen.index, classes].to_numpy(), chosen.to_numpy(), atol=1e-6)
    assert json.loads((run / "tta_views.json").read_text())["views"] == auto["chosen"]
    assert run_main(capsys, "report", "--config", str(config)).returncode == 0
    page = (run / "report.html").read_text()
    assert "TTA " + "+".join(auto["chosen"]) in page and "a+u+t+o" not in page


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_auto_bundle_kernel_scores_the_views_it_predicts(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Kernel fits CV (and thresholds) on the bundled OOF: those must hold the views its test predictions use."""
    from pipeline.commands import kernel_predict as kernel
    from pipeline.core import paths

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, tta={"views": "auto"})
    run_chain(capsys, config)
    home = json.loads((project / "data/runs/toy/tiny/scores.json").read_text())
    assert run_main(capsys, "kaggle-bundle", "--config", str(config), "--user", "someone").returncode == 0
    bundled = yaml.safe_load((project / "data/runs/toy/tiny/kaggle-bundle/dataset/tiny.yaml").read_text())
    assert bundled["tta"]["views"] == home["tta_views"]
    mounted = project / "kaggle-input"
    mounted.mkdir()
    (mounted / "toy").symlink_to(project / "data/raw/toy")
    monkeypatch.setattr(paths, "KAGGLE_INPUT", mounted)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", project / "kaggle-working")
    (project / "kaggle-working").mkdir()
    monkeypatch.setenv("PIPELINE_ROOT", str(project / "kernel-root"))
    assert kernel.run_bundle(project / "data/runs/toy/tiny/kaggle-bundle/dataset") == 0
    inside = json.loads((project / "kernel-root/data/runs/toy/tiny/scores.json").read_text())
    assert inside["tta_views"] == home["tta_views"]
    assert inside["cv"] == pytest.approx(home["cv"]) and inside["folds"] == pytest.approx(home["folds"])
    for fold in range(2):
        local = pd.read_csv(project / f"data/runs/toy/tiny/fold{fold}/test.csv", dtype={"id": str})
        kaggle = pd.read_csv(project / f"kernel-root/data/runs/toy/tiny/fold{fold}/test.csv", dtype={"id": str})
        pd.testing.assert_frame_equal(local, kaggle, atol=2e-3)  # home reads the uint8 cache, the Kernel decodes
