"""make refit: one model on every training row for the folds' median best epoch; ensemble.refit mixes its test
predictions with the folds' (weight 1/(k+1)) and scores.json says it has no OOF."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from helpers.builders import run_main, tiny_experiment, write_competition_config
from pipeline.core import paths
from pipeline.core.config import load_config
from pipeline.training.fold import prepare_fold


def stage(capsys: pytest.CaptureFixture, *args: str, code: int = 0) -> str:
    result = run_main(capsys, *args)
    assert result.returncode == code, result.stderr
    return result.stderr


def saved_epoch(weights: Path) -> int:
    with safe_open(str(weights), framework="pt") as f:
        return json.loads(f.metadata()["recipe"])["epoch"]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_refit_trains_on_all_rows_for_the_median_best_epoch_and_ensemble_mixes_it(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_config(project, n_folds=3)
    config = tiny_experiment(project, train={"epochs": 3, "keep": "best", "lr": 0.05})
    for name in ("folds", "train", "predict"):
        stage(capsys, name, "--config", str(config))
    run = project / "data/runs/toy/tiny"
    fold_epochs = [saved_epoch(run / f"fold{k}/model.safetensors") for k in range(3)]
    missing = stage(capsys, "ensemble", "--config", str(config), "--set", "ensemble.refit=true", code=2)
    assert missing.startswith("error:") and "make refit" in missing and "refit/test.csv" in missing

    resolved = (run / "config.yaml").read_text()
    stopped = stage(capsys, "train", "--config", str(config), "--fold", "refit", "--set", "train.time_budget=0.001",
                    code=75)  # fmt: skip
    assert "re-run the same command to resume" in stopped
    assert "resuming from epoch" in stage(capsys, "train", "--config", str(config), "--fold", "refit")
    stage(capsys, "predict", "--config", str(config), "--fold", "refit")
    expected_epochs = int(np.floor(statistics.median(fold_epochs) + 0.5))
    assert len(pd.read_csv(run / "refit/log.csv")) == expected_epochs
    assert saved_epoch(run / "refit/model.safetensors") == expected_epochs  # keep: last for the refit
    assert (run / "config.yaml").read_text() == resolved  # the experiment's resolved config, not the refit's

    stage(capsys, "ensemble", "--config", str(config))
    alone = json.loads((run / "scores.json").read_text())
    folds_only = pd.read_csv(run / "test.csv")
    assert alone["refit"] == {"included": False}
    stage(capsys, "ensemble", "--config", str(config), "--set", "ensemble.refit=true")
    scores = json.loads((run / "scores.json").read_text())
    refit = scores["refit"]
    assert refit["included"] and refit["weight"] == pytest.approx(0.25) and "no" in refit["oof"].split(":")[0]
    assert refit["epochs"] == expected_epochs and refit["fold_epochs"] == fold_epochs
    assert scores["cv"] == alone["cv"] and scores["folds"] == alone["folds"]  # the refit has no OOF
    classes = [c for c in folds_only.columns if c != "id"]
    refit_test = pd.read_csv(run / "refit/test.csv")
    mixed = pd.read_csv(run / "test.csv")
    want = 0.75 * folds_only[classes].to_numpy() + 0.25 * refit_test[classes].to_numpy()
    np.testing.assert_allclose(mixed[classes].to_numpy(), want, rtol=1e-6, atol=1e-7)
    assert pd.read_csv(run / "refit/oof.csv").empty


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_refit_fold_trains_on_every_row(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_config(project, n_folds=2)
    config = tiny_experiment(project)
    cfg = load_config(config)
    stage(capsys, "folds", "--config", str(config))
    total = len(pd.read_csv(project / "data/processed/toy/folds.csv"))
    refit = prepare_fold(cfg, paths.REFIT, torch.device("cpu"), "fp")
    fold0 = prepare_fold(cfg, 0, torch.device("cpu"), "fp")
    assert len(refit.train_loader.dataset) == total > len(fold0.train_loader.dataset)
    assert paths.for_config(cfg).weights(paths.REFIT).parent.name == "refit"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_refit_under_tta_auto_uses_the_views_ensemble_chose(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_config(project, n_folds=2)
    config = tiny_experiment(project, tta={"views": "auto"}, ensemble={"refit": True})
    for args in (["folds"], ["train"], ["predict"], ["train", "--fold", "refit"], ["predict", "--fold", "refit"]):
        stage(capsys, *args, "--config", str(config))
    stage(capsys, "ensemble", "--config", str(config))
    run = project / "data/runs/toy/tiny"
    views = json.loads((run / "scores.json").read_text())["tta_views"]
    by_view = pd.read_csv(run / "refit/test_by_view.csv")
    classes = [c for c in by_view.columns if c not in ("id", "view")]
    refit = by_view[by_view["view"].isin(views)].groupby("id", sort=False)[classes].mean()
    folds = [pd.read_csv(run / f"fold{k}/test.csv").set_index("id") for k in range(2)]
    want = (folds[0][classes] + folds[1][classes] + refit.loc[folds[0].index, classes]) / 3
    mixed = pd.read_csv(run / "test.csv").set_index("id")
    np.testing.assert_allclose(mixed[classes].to_numpy(), want.to_numpy(), rtol=1e-6, atol=1e-7)
    again = stage(capsys, "predict", "--fold", "refit", "--config", str(config))
    assert "predictions up to date, skipping" in again
