"""RUNNER=kaggle: units trained in Kaggle notebooks, against a fake Kaggle that really runs the pushed kernels
(tests/helpers/fake_kaggle_runner.py) with the real kaggle client, a tiny deterministic CPU experiment.

The kernels run in a virtualenv that plays Kaggle's image (tests/helpers/kernel_venv.py): the bundle's wheels
install there, as in a notebook."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from helpers.builders import tiny_experiment, write_competition_config
from helpers.fake_kaggle_runner import TIMEOUT_MESSAGE, RunningKaggle
from helpers.kaggle_env import RUNNER, Pipeline, pipeline_env
from helpers.kernel_venv import kernel_env, kernel_python

COMP, EXP, USER = "toy", "tiny", "fake-user"
CONFIG = f"configs/{COMP}/{EXP}.yaml"
KERNEL0 = f"{USER}/toy-tiny-fold0-train"
TRAIN = {"epochs": 2, "deterministic": True, "batch_size": 8}


@pytest.fixture(scope="module")
def kernel_python_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kernel_python(tmp_path_factory.mktemp("kaggle-image"))


def make_project(root: Path, **train: object) -> Path:
    write_competition_config(root)
    tiny_experiment(root, train={**TRAIN, **train})
    return root


def competition_files(root: Path) -> dict[str, bytes]:
    raw = root / "data/raw" / COMP
    return {p.relative_to(raw).as_posix(): p.read_bytes() for p in raw.rglob("*") if p.is_file()
            and p.name != ".complete"}  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "home")


@pytest.fixture
def kaggle(tmp_path: Path, kernel_python_path: Path, project: Path) -> Iterator[RunningKaggle]:
    fake = RunningKaggle(tmp_path / "server", str(kernel_python_path), kernel_env(), time_limit=240)
    fake.add_competition(COMP, competition_files(project))
    with fake:
        yield fake


def home(root: Path, fake: RunningKaggle, tmp_path: Path) -> Pipeline:
    runner = Pipeline(root, pipeline_env(root, fake))
    runner.route_to(fake.url)
    runner.env.update(TMPDIR=str(tmp_path), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIPELINE_KAGGLE_POLL="0.2")
    return runner


def state(root: Path, fold: int) -> dict:
    path = root / f"data/runs/{COMP}/{EXP}/fold{fold}/remote.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.slow
def test_a_remote_fold_equals_a_local_one(project: Path, kaggle: RunningKaggle, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    local = tmp_path / "local"
    shutil.copytree(project, local)
    run = home(project, kaggle, tmp_path)
    assert run("folds", "--config", CONFIG).returncode == 0
    shutil.copytree(project / "data/processed", local / "data/processed", dirs_exist_ok=True)
    here = Pipeline(local, {**run.env, "PIPELINE_ROOT": str(local)})
    trained = here("train", "--config", CONFIG, "--fold", "0", timeout=300)
    assert trained.returncode == 0, trained.stderr

    kaggle.stale_polls = 1  # a status that still describes the previous session right after a push
    remote = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.sessions=1", timeout=400)
    assert remote.returncode == 0, remote.stderr
    fold0 = project / f"data/runs/{COMP}/{EXP}/fold0"
    ours, theirs = load_file(fold0 / "model.safetensors"), load_file(local / f"data/runs/{COMP}/{EXP}/fold0/model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert (fold0 / "oof_plain.csv").read_bytes() == (local / f"data/runs/{COMP}/{EXP}/fold0/oof_plain.csv").read_bytes()
    assert (fold0 / "log.csv").is_file() and not (fold0 / "work").exists()
    assert state(project, 0)["state"] == "done" and state(project, 0)["kernel"] == KERNEL0
    assert "remote fold 0: done" in remote.stderr, remote.stderr
    (saved, *_) = kaggle.kernels[KERNEL0]
    assert saved["competitionDataSources"] == [COMP] and saved["datasetDataSources"] == [f"{USER}/toy-tiny-train"]
    assert saved["enableInternet"] is True and not saved.get("kernelDataSources")
    assert (project / f"data/runs/{COMP}/{EXP}/config.yaml").is_file()

    again = run("remote-train", "--config", CONFIG, "--fold", "0", timeout=120)  # home already: nothing pushed
    assert again.returncode == 0 and "already trained" in again.stderr
    assert len(kaggle.kernels[KERNEL0]) == 1
