"""A seed bag in the Kaggle bundle: every member's weights ship (flat fold<k>-seed<s>.safetensors, listed in the
fold's `members`), and the Kernel averages a fold's members exactly as local predict does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.builders import run_main, tiny_experiment, write_competition_config
from pipeline.core import paths

pytest_plugins = ["helpers.kaggle_env"]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_bundle_ships_every_member_and_the_kernel_averages_them_like_predict(
    project: Path, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.commands.kernel_predict import run_bundle

    write_competition_config(project, n_train=24, n_test=4)
    config = str(tiny_experiment(project, train={"seeds": [7, 8]}))
    for stage in ("folds", "train", "predict", "ensemble", "submission"):
        assert run_main(capsys, stage, "--config", config).returncode == 0, stage
    built = run_main(capsys, "kaggle-bundle", "--config", config, "--user", "fake-user")
    assert built.returncode == 0, built.stderr
    run = project / "data/runs/toy/tiny"
    dataset = run / "kaggle-bundle/dataset"
    manifest = json.loads((dataset / "bundle.json").read_text())
    for k in (0, 1):
        entry = manifest["folds"][k]
        assert [m["seed"] for m in entry["members"]] == [7, 8] and "weights" not in entry
        for member in entry["members"]:
            shipped = (dataset / member["weights"]).read_bytes()
            assert member["weights"] == f"fold{k}-seed{member['seed']}.safetensors"
            assert shipped == (run / f"fold{k}/seed{member['seed']}/model.safetensors").read_bytes()

    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    (kaggle_input / "competitions").mkdir(parents=True)
    working.mkdir(parents=True)
    (kaggle_input / "competitions/toy").symlink_to(project / "data/raw/toy")
    (kaggle_input / "toy-tiny-bundle").symlink_to(dataset)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kernel-work"))
    monkeypatch.setattr(paths, "KAGGLE_INPUT", kaggle_input)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", working)
    assert run_bundle(kaggle_input / "toy-tiny-bundle") == 0
    kernel_run = tmp_path / "kernel-work/data/runs/toy/tiny"
    for k in (0, 1):
        local, kernel = pd.read_csv(run / f"fold{k}/test.csv"), pd.read_csv(kernel_run / f"fold{k}/test.csv")
        assert list(kernel["id"]) == list(local["id"])
        classes = [c for c in local.columns if c != "id"]
        np.testing.assert_allclose(kernel[classes], local[classes], rtol=1e-5, atol=1e-6)
        single = pd.read_csv(run / f"fold{k}/seed7/test.csv")  # the bag's mean, not one member
        assert not np.allclose(kernel[classes], single[classes])
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str))
