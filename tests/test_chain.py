"""End to end with a tiny timm model on 32 px images: every stage through the CLI, as a user runs it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers.builders import run_cli, run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core.config import DataConfig
from pipeline.inference.submission import format_submission


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("layout", ["csv", "multilabel_text", "probabilities"])
def test_chain_writes_a_valid_submission(project: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, layout)
    config = tiny_experiment(project)
    run_chain(capsys, config)
    run = project / "data/runs/toy/tiny"
    scores = json.loads((run / "scores.json").read_text())
    assert {"metric", "cv", "folds", "higher_is_better", "seed", "git_commit", "versions"} <= set(scores)
    assert len(scores["folds"]) == 2 and all(math.isfinite(value) for value in [scores["cv"], *scores["folds"]])
    if scores["metric"] != "log_loss":  # a score in [0, 1]; log loss is any positive number
        assert 0.0 <= scores["cv"] <= 1.0
    for fold in (0, 1):
        log = pd.read_csv(run / f"fold{fold}/log.csv")
        assert list(log["epoch"]) == [1]
        assert not (run / f"fold{fold}/work").exists()  # the resume checkpoint is dropped once weights exist
    oof = pd.read_csv(run / "oof.csv")
    folds = pd.read_csv(project / "data/processed/toy/folds.csv", dtype=str)
    assert list(oof["id"].astype(str)) == list(folds["id"])  # every training row once, in folds.csv order
    sample = pd.read_csv(project / "data/raw/toy/sample_submission.csv", dtype=str)
    submission = pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert list(submission.iloc[:, 0]) == list(sample.iloc[:, 0])


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_rerun_is_a_no_op_and_changed_config_is_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    run_chain(capsys, config)
    weights = project / "data/runs/toy/tiny/fold0/model.safetensors"
    before = weights.read_bytes()
    again = run_main(capsys, "train", "--config", str(config))
    assert again.returncode == 0 and "already trained" in again.stderr
    assert weights.read_bytes() == before
    assert "up to date" in run_main(capsys, "predict", "--config", str(config), "--fold", "0").stderr
    changed = run_cli("train", "--config", str(config), "--set", "train.lr=0.5", cwd=project)
    assert changed.returncode == 2
    assert changed.stderr.startswith("error:") and "different config" in changed.stderr
    assert "Traceback" not in changed.stderr
    # TTA is not part of training: changing it re-predicts without retraining
    fewer_views = run_main(capsys, "predict", "--config", str(config), "--fold", "0", "--set", "tta.views=[identity]")
    assert fewer_views.returncode == 0 and "identity" in fewer_views.stderr and weights.read_bytes() == before


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_stop_and_resume_gives_the_same_weights(project: Path, capsys: pytest.CaptureFixture) -> None:
    """A run stopped by its time budget mid-epoch resumes from the checkpoint and ends bit-identical."""
    write_competition_yaml(project, "csv")
    settings = {"epochs": 2, "deterministic": True}
    straight = tiny_experiment(project, name="straight", train=settings)
    stopped = tiny_experiment(project, name="stopped", train=settings)
    assert run_main(capsys, "folds", "--config", str(straight)).returncode == 0
    assert run_main(capsys, "train", "--config", str(straight), "--fold", "0").returncode == 0

    first = run_main(capsys, "train", "--config", str(stopped), "--fold", "0", "--set", "train.time_budget=0.001")
    assert first.returncode == 75 and "re-run the same command to resume" in first.stderr
    run = project / "data/runs/toy/stopped/fold0"
    assert (run / "work/last.pt").exists() and not (run / "model.safetensors").exists()
    resumed = run_main(capsys, "train", "--config", str(stopped), "--fold", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch 0 step 1" in resumed.stderr
    assert list(pd.read_csv(run / "log.csv")["epoch"]) == [1, 2]

    from safetensors.torch import load_file

    a = load_file(str(project / "data/runs/toy/straight/fold0/model.safetensors"))
    b = load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("fmt", "task", "expected"),
    [
        ("label", "single_label", ["label", ["b", "a"]]),
        ("probabilities", "single_label", ["a", [0.2, 0.9]]),
        ("labels", "multi_label", ["label", ["b", "a b"]]),
        ("numeric", "ordinal", ["label", None]),
    ],
)
def test_submission_formats(fmt: str, task: str, expected: list) -> None:
    classes = ["1", "2"] if fmt == "numeric" else ["a", "b"]
    data = DataConfig(classes=classes, task=task, submission_format=fmt)
    probs = pd.DataFrame({"id": ["x", "y"], classes[0]: [0.2, 0.9], classes[1]: [0.8, 0.6]})
    frame = format_submission(probs, data)
    column, values = expected
    assert frame.columns[0] == "id"
    if fmt == "probabilities":
        assert list(frame.columns) == ["id", "a", "b"]
    if fmt == "numeric":
        assert list(frame["label"]) == [2, 1] and frame["label"].dtype.kind == "i"
    else:
        assert list(frame[column]) == values


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_sample_run_writes_only_its_own_paths(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    run_chain(capsys, config, "--set", "sample=12")
    sample_folds = pd.read_csv(project / "data/processed/toy/sample12/folds.csv", dtype=str)
    assert len(sample_folds) == 12 and sample_folds["label"].value_counts().min() >= 2  # stratified subset
    assert not (project / "data/processed/toy/folds.csv").exists()
    assert (
        not (project / "data/runs/toy/tiny").exists() and (project / "data/runs/toy/tiny-sample12/scores.json").exists()
    )
    submission = pd.read_csv(project / "submissions/toy/tiny-sample12.csv", dtype=str)
    sample = pd.read_csv(project / "data/raw/toy/sample_submission.csv", dtype=str)
    assert list(submission["id"]) == list(sample["id"].head(len(submission)))
    assert not (project / "submissions/toy/tiny.csv").exists()
