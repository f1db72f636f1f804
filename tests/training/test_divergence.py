"""Issue 17: a diverged run stops with one error line, and predictions never look finished when they are not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers.builders import run_main, tiny_experiment
from helpers.chain import write_competition_yaml
from pipeline.core import artifacts

RUN = "data/runs/toy/tiny"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_diverging_lr_stops_the_fold_and_leaves_no_submission(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, train={"lr": 1e9, "checkpoint_every": 1, "batch_size": 2})
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    result = run_main(capsys, "train", "--config", str(config), "--fold", "0")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: fold 0 diverged at epoch 1 step ") and "lower train.lr (now 1e+09)" in line
    assert "kept for inspection" in line and (project / RUN / "fold0/work/last.pt").exists()
    assert not (project / RUN / "fold0/model.safetensors").exists()
    assert run_main(capsys, "predict", "--config", str(config), "--fold", "0").returncode == 2
    assert not (project / "submissions").exists()


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_non_finite_weights_and_probabilities_are_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    for stage in ("folds", "train"):
        assert run_main(capsys, stage, "--config", str(config), "--fold", "0").returncode == 0
    weights = project / RUN / "fold0/model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state[name] = torch.full_like(state[name], float("nan"))
    artifacts.save_safetensors(weights, state, metadata)
    result = run_main(capsys, "predict", "--config", str(config), "--fold", "0")
    assert result.returncode == 2 and "NaN or infinite values" in result.stderr and name in result.stderr
    assert not (project / RUN / "fold0/test.csv").exists() and not (project / RUN / "fold0/oof.csv").exists()

    from pipeline.core.config import load_config
    from pipeline.inference.fold_model import check_finite

    with pytest.raises(Exception, match="NaN or infinite probabilities"):
        check_finite(np.array([[0.5, np.nan]]), pd.Series(["a"]), "identity")
    assert load_config(config).metric  # the config itself is fine: only the numbers were refused


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_killed_predict_is_redone_not_skipped(project: Path, capsys: pytest.CaptureFixture) -> None:
    """Change tta.views, and simulate a kill after oof.csv/test.csv were rewritten but before the marker was."""
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    for stage in ("folds", "train", "predict"):
        assert run_main(capsys, stage, "--config", str(config), "--fold", "0").returncode == 0
    fold = project / RUN / "fold0"
    old = {name: (fold / name).read_bytes() for name in ("oof.csv", "test.csv", "predict.json")}
    views = ("--set", "tta.views=[identity]")
    assert run_main(capsys, "predict", "--config", str(config), "--fold", "0", *views).returncode == 0
    killed = fold.parent / "killed"
    shutil.copytree(fold, killed)
    # killed between the writes: the new test.csv is there, the marker is the old run's
    (fold / "predict.json").write_bytes(old["predict.json"])
    (fold / "oof.csv").write_bytes(old["oof.csv"])
    result = run_main(capsys, "predict", "--config", str(config), "--fold", "0")
    assert "skipping" not in result.stderr and result.returncode == 0
    assert (fold / "test.csv").read_bytes() == old["test.csv"]  # old views again, predicted afresh
    # a marker from this config but files another run left: digests differ, so it is redone
    (fold / "test.csv").write_bytes((killed / "test.csv").read_bytes())
    result = run_main(capsys, "predict", "--config", str(config), "--fold", "0")
    assert "skipping" not in result.stderr and (fold / "test.csv").read_bytes() == old["test.csv"]
    marker = json.loads((fold / "predict.json").read_text())
    assert set(marker["digests"]) == {"oof.csv", "test.csv"}
    assert "skipping" in run_main(capsys, "predict", "--config", str(config), "--fold", "0").stderr
