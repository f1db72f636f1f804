"""summary: what a `make all` run did. A train that finds its weights current and skips them (touching them, so Make
sees them up to date) trained nothing, and the summary must say so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.builders import run_main, tiny_experiment, write_competition_config

STAGES = ("folds", "train", "predict", "ensemble", "submission")


def test_a_run_that_skips_current_weights_reports_nothing_retrained(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_competition_config(project, "csv", n_train=16, n_test=4)
    config = str(tiny_experiment(project))
    for stage in STAGES:
        assert run_main(capsys, stage, "--config", config).returncode == 0, stage
    monkeypatch.setenv("PIPELINE_MAKE_START", f"{time.time():.6f}")
    fresh = run_main(capsys, "summary", "--config", config)
    assert "nothing retrained" in fresh.stdout, fresh.stdout
    skipped = run_main(capsys, "train", "--config", config)  # what `make all SET=...` runs: every fold is current
    assert skipped.returncode == 0 and "already trained" in skipped.stderr, skipped.stderr
    after = run_main(capsys, "summary", "--config", config)
    assert "nothing retrained" in after.stdout and "trained fold" not in after.stdout, after.stdout
    (project / "data/runs/toy/tiny/fold1/model.safetensors").unlink()
    assert run_main(capsys, "train", "--config", config, "--fold", "1").returncode == 0
    retrained = run_main(capsys, "summary", "--config", config)
    assert "this run trained fold(s) 1" in retrained.stdout, retrained.stdout
