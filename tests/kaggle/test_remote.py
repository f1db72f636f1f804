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
from helpers.fake_kaggle_runner import RunningKaggle
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
    ours, theirs = (
        load_file(fold0 / "model.safetensors"),
        load_file(local / f"data/runs/{COMP}/{EXP}/fold0/model.safetensors"),
    )
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert (fold0 / "oof_plain.csv").read_bytes() == (
        local / f"data/runs/{COMP}/{EXP}/fold0/oof_plain.csv"
    ).read_bytes()
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


def built(project: Path, run: Pipeline) -> Pipeline:
    assert run("folds", "--config", CONFIG).returncode == 0
    return run


@pytest.mark.slow
def test_a_failed_notebook_brings_its_log_home_and_exits_2(
    project: Path, kaggle: RunningKaggle, tmp_path: Path
) -> None:
    run = built(project, home(project, kaggle, tmp_path))
    kaggle.fail_versions = {KERNEL0: {1}}
    failed = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.sessions=1", timeout=300)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: fold 0 failed on Kaggle") and "exit code 1" in last, last
    assert "this notebook was made to fail" in last and "fold0/.remote" in last
    assert "  | error: this notebook was made to fail" in failed.stderr  # Kaggle's last lines, above the error
    assert not (project / f"data/runs/{COMP}/{EXP}/fold0/model.safetensors").exists()
    assert state(project, 0) == {}  # reported once; the next make pushes it afresh
    assert list(kaggle.kernels) == [KERNEL0]  # nothing else pushed once this unit failed


@pytest.mark.slow
def test_a_vanished_unit_is_said_as_such(project: Path, kaggle: RunningKaggle, tmp_path: Path) -> None:
    run = built(project, home(project, kaggle, tmp_path))
    kaggle.delete(KERNEL0)  # gone from Kaggle as soon as it is pushed
    gone = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.sessions=1", timeout=300)
    assert gone.returncode == 2, gone.stderr
    assert "vanished from Kaggle" in gone.stderr.strip().splitlines()[-1], gone.stderr


@pytest.mark.slow
def test_nothing_is_pushed_when_the_gpu_quota_is_used_up(project: Path, kaggle: RunningKaggle, tmp_path: Path) -> None:
    run = built(project, home(project, kaggle, tmp_path))
    kaggle.gpu_used = kaggle.gpu_total
    refused = run("remote-train", "--config", CONFIG, "--fold", "0", "--accelerator", "t4x2", timeout=300)
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "fold 0 was not pushed: the weekly GPU quota left (0.0 h of 30.0 h)" in last, last
    assert kaggle.calls("SaveKernel") == []


@pytest.mark.slow
def test_ctrl_c_leaves_the_notebook_running_and_the_next_call_reattaches(
    project: Path, kaggle: RunningKaggle, tmp_path: Path
) -> None:
    run = built(project, home(project, kaggle, tmp_path))
    command = [sys.executable, "-c", RUNNER, "remote-train", "--config", CONFIG, "--fold", "0", "--set",
               "kaggle.sessions=1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=project, env=run.env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while state(project, 0).get("state") != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"still running on Kaggle: fold 0 ({KERNEL0} v1)" in stderr and "re-attach" in stderr, stderr
    assert state(project, 0)["state"] == "running"

    again = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.sessions=1", timeout=400)
    assert again.returncode == 0, again.stderr
    assert len(kaggle.kernels[KERNEL0]) == 1  # re-attached to version 1: not pushed again
    assert (project / f"data/runs/{COMP}/{EXP}/fold0/model.safetensors").is_file()


def submission_of(root: Path, env: dict[str, str], *args: str) -> tuple[pd.DataFrame, str]:
    env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    command = ["make", "--no-print-directory", "-f", str(Path(__file__).resolve().parents[2] / "Makefile"), "all",
               f"CONFIG={CONFIG}", *args]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return pd.read_csv(root / f"submissions/{COMP}/{EXP}.csv", dtype=str), done.stderr


@pytest.mark.slow
def test_make_all_on_kaggle_gives_the_local_submission_with_a_unit_in_two_sessions(
    tmp_path: Path, kernel_python_path: Path
) -> None:
    project = make_project(tmp_path / "home", epochs=1)
    local = tmp_path / "local"
    shutil.copytree(project, local)
    fake = RunningKaggle(tmp_path / "server", str(kernel_python_path), kernel_env(), time_limit=240, max_sessions=1)
    fake.add_competition(COMP, competition_files(project))
    fake.stale_polls = 1
    with fake:
        run = home(project, fake, tmp_path)
        here = {**run.env, "PIPELINE_ROOT": str(local)}
        expected, _ = submission_of(local, here)
        # A tiny time budget: every session stops after one step and the next one resumes from its checkpoint.
        remote, stderr = submission_of(project, run.env, "RUNNER=kaggle", "SET=train.time_budget=0.001")
    pd.testing.assert_frame_equal(remote, expected)
    for fold in (0, 1):
        record = state(project, fold)
        assert record["state"] == "done" and record["session"] >= 2, record
        saved = fake.kernels[f"{USER}/toy-tiny-fold{fold}-train"]
        assert saved[1]["kernelDataSources"] == [f"{USER}/toy-tiny-fold{fold}-train"]  # its own output: the checkpoint
    assert fake.peak_sessions == 1 and "waits for a free one" in stderr  # refused pushes waited, then went
    assert "stopped at its time budget" in stderr and "remote fold 1: done" in stderr


def test_make_sends_each_unit_to_remote_train_with_runner_kaggle(tmp_path: Path) -> None:
    project = make_project(tmp_path, seeds=[7, 8])
    (project / "data/raw" / COMP / ".complete").touch()
    env = {k: v for k, v in kernel_env().items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    makefile = str(Path(__file__).resolve().parents[2] / "Makefile")

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "-f", makefile, *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    planned = make("-n", "train", f"CONFIG={CONFIG}", "RUNNER=kaggle", "KAGGLE_USER=someone")
    assert planned.returncode == 0, planned.stderr
    units = sorted(line.split("--fold ")[1] for line in planned.stdout.splitlines() if " remote-train " in line)
    assert units == ["0 --seed 7", "0 --seed 8", "1 --seed 7", "1 --seed 8"], planned.stdout
    assert " train --config" not in planned.stdout and "--user someone" in planned.stdout
    local = make("-n", "train", f"CONFIG={CONFIG}")
    assert " remote-train " not in local.stdout and " train --config" in local.stdout
    wrong = make("-n", "train", f"CONFIG={CONFIG}", "RUNNER=cloud")
    assert wrong.returncode != 0 and "RUNNER=cloud: use RUNNER=local" in wrong.stderr
