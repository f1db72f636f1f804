"""Tracking read back with the trackers' own readers (MLflow's client, TensorBoard's event reader), no mocks.

A tiny 2-fold, 2-epoch run with `tracking: mlflow` (or tensorboard) through the CLI stages; then the tracker's
store must hold what the pipeline's files say: every epoch row of every fold, the config, scores.json's CV and
per-fold scores, the report's files. A tracker that is missing or broken costs one warning line, never the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.builders import run_main, tiny_experiment, write_competition_config

STAGES = ("folds", "train", "predict", "ensemble")


def run_stages(capsys: pytest.CaptureFixture, config: Path, *extra: str) -> str:
    errors = ""
    for stage in STAGES:
        result = run_main(capsys, stage, "--config", str(config), *extra)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
        errors += result.stderr
    return errors


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_mlflow_run_per_experiment_child_per_fold(project: Path, capsys: pytest.CaptureFixture) -> None:
    mlflow = pytest.importorskip("mlflow")
    write_competition_config(project)
    config = tiny_experiment(project, train={"epochs": 2}, tracking="mlflow")
    stderr = run_stages(capsys, config)
    assert "warning: tracking" not in stderr
    result = run_main(capsys, "report", "--config", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = project / "data/runs/toy/tiny"
    scores = json.loads((run_dir / "scores.json").read_text())

    client = mlflow.MlflowClient(f"sqlite:///{project / 'data/mlruns/mlflow.db'}")
    experiment = client.get_experiment_by_name("toy")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pipeline.level") == "experiment"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("pipeline.level") == "fold"}
    assert len(parents) == 1 and set(children) == {"fold0", "fold1"}
    parent = parents[0]
    assert parent.info.run_name == "tiny"
    assert parent.data.metrics["cv"] == pytest.approx(scores["cv"])
    for k, value in enumerate(scores["folds"]):
        assert parent.data.metrics[f"fold{k}"] == pytest.approx(value)
    assert parent.data.params["model.name"] == "test_efficientnet" and parent.data.params["train.epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"scores.json", "config.yaml", "report.html", "report_curves.png"} <= artifacts
    for fold in (0, 1):
        child = children[f"fold{fold}"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        log = pd.read_csv(run_dir / f"fold{fold}/log.csv")
        history = client.get_metric_history(child.info.run_id, "valid_accuracy")
        assert [(m.step, m.value) for m in history] == [
            (int(e), pytest.approx(v)) for e, v in zip(log["epoch"], log["valid_accuracy"], strict=True)
        ]
        assert {"train_loss", "lr", "train_images_per_s", "data_wait_share"} <= set(child.data.metrics)

    # Syncing again (a re-run, or `make report` again) adds no duplicate epochs and no second run.
    assert run_main(capsys, "ensemble", "--config", str(config)).returncode == 0
    from pipeline.core.config import load_config
    from pipeline.reporting import tracking

    tracking.sync_fold(load_config(config), 0)
    assert len(client.search_runs([experiment.experiment_id])) == 3
    assert len(client.get_metric_history(children["fold0"].info.run_id, "valid_accuracy")) == 2

    # `make scores` wrote leaderboard.csv (newest submission first): its hook adds the leaderboard scores.
    pd.DataFrame({"experiment": ["tiny", "tiny"], "public_score": [0.91, 0.5], "private_score": [0.89, 0.4]}).to_csv(
        project / "data/runs/toy/leaderboard.csv", index=False
    )
    tracking.after_stage(argparse.Namespace(command="scores", comp="toy", config=None, overrides=[]))
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["public_score"] == pytest.approx(0.91) and metrics["private_score"] == pytest.approx(0.89)


def test_tensorboard_event_files_hold_epoch_scalars(project: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_competition_config(project)
    config = tiny_experiment(project, train={"epochs": 2}, tracking="tensorboard")
    run_stages(capsys, config)
    tb = project / "data/runs/toy/tiny/tb"
    for fold in (0, 1):
        events = EventAccumulator(str(tb / f"fold{fold}"))
        events.Reload()
        log = pd.read_csv(project / f"data/runs/toy/tiny/fold{fold}/log.csv")
        scalars = events.Scalars("valid_accuracy")
        assert [(s.step, s.value) for s in scalars] == [
            (int(e), pytest.approx(v, abs=1e-6)) for e, v in zip(log["epoch"], log["valid_accuracy"], strict=True)
        ]
        assert "train_loss" in events.Tags()["scalars"]
    events = EventAccumulator(str(tb / "experiment"))
    events.Reload()
    scores = json.loads((project / "data/runs/toy/tiny/scores.json").read_text())
    assert events.Scalars("cv")[0].value == pytest.approx(scores["cv"], abs=1e-6)


def test_a_broken_tracker_warns_once_and_training_goes_on(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    from pipeline.reporting import tracking

    monkeypatch.setattr(tracking, "_warned", set())
    blocker = project / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    write_competition_config(project)
    config = tiny_experiment(project, tracking="mlflow")
    stderr = run_stages(capsys, config)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: tracking (mlflow)")]
    assert len(warnings) == 1, stderr
    assert (project / "data/runs/toy/tiny/scores.json").exists()


def test_tracking_key_is_checked(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_config(project)
    config = tiny_experiment(project, tracking="mlfow")
    result = run_main(capsys, "folds", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: tracking: 'mlfow' is not one of none, mlflow, tensorboard, wandb"


def test_mlflow_ui_without_the_full_mlflow_is_one_line_naming_the_install(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from pipeline.reporting import tracking

    skinny_only = True
    try:
        importlib.metadata.distribution("mlflow")
        skinny_only = False
    except importlib.metadata.PackageNotFoundError:
        pass
    if skinny_only:  # the test venv: mlflow-skinny (same `import mlflow`), which has no UI server
        assert not tracking.full_mlflow_installed()
    monkeypatch.setattr(tracking, "full_mlflow_installed", lambda: False)
    result = run_main(capsys, "mlflow-ui", "--port", "5999")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: mlflow-ui needs the full MLflow package") and "pip install mlflow" in lines[0]
