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

from helpers.builders import in_project, tiny_experiment, write_competition_config
from helpers.fake_kaggle_runner import RunningKaggle
from helpers.kaggle_env import RUNNER, Pipeline, pipeline_env
from helpers.kernel_venv import kernel_env, kernel_python

COMP, EXP, USER = "toy", "tiny", "fake-user"
CONFIG = f"configs/{COMP}/{EXP}.yaml"
KERNEL0 = f"{USER}/toy-tiny-fold0-train"
PAIR = f"{USER}/toy-tiny-fold0-fold1-train"
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


GPU_METRIC = """import os

import numpy as np


def score(targets, labels):
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "0":  # this test's broken GPU: the notebook's first unit fails
        raise RuntimeError("GPU 0 is broken")
    return float(np.mean(np.asarray(targets) == np.asarray(labels)))
"""


def weights_equal(ours: Path, theirs: Path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(ours), load_file(theirs)
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_two_folds_share_one_notebook_and_land_as_local_runs_with_lr_auto_and_tracking(
    tmp_path: Path, kernel_python_path: Path
) -> None:
    project = make_project(tmp_path / "home")
    tiny_experiment(project, train={**TRAIN, "lr": "auto"}, tracking="tensorboard")
    local = tmp_path / "local"
    shutil.copytree(project, local)
    fake = RunningKaggle(tmp_path / "server", str(kernel_python_path), kernel_env(), time_limit=300)
    fake.add_competition(COMP, competition_files(project))
    with fake:
        run = home(project, fake, tmp_path)
        assert run("folds", "--config", CONFIG).returncode == 0
        shutil.copytree(project / "data/processed", local / "data/processed", dirs_exist_ok=True)
        here = Pipeline(local, {**run.env, "PIPELINE_ROOT": str(local)})
        for fold in ("0", "1"):
            trained = here("train", "--config", CONFIG, "--fold", fold, timeout=300)
            assert trained.returncode == 0, trained.stderr
        # No lr_find.json at home yet: the range test runs here first and ships with the bundle.
        remote = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.units_per_notebook=2",
                     timeout=500)  # fmt: skip
        assert remote.returncode == 0, remote.stderr
        again = run("remote-train", "--config", CONFIG, "--fold", "1", "--set", "kaggle.units_per_notebook=2")
        log = (fake.sessions[(PAIR, 1)] / "output.txt").read_text()
    assert list(fake.kernels) == [PAIR] and len(fake.kernels[PAIR]) == 1, list(fake.kernels)  # one notebook
    assert "[fold0] " in log and "[fold1] " in log and "on GPU 1" in log, log
    assert "running the LR range test here first" in remote.stderr and "lr-find" not in log, remote.stderr
    assert again.returncode == 0 and "already trained" in again.stderr, again.stderr  # landed with fold 0
    assert "remote fold 0: pushed (session 1, fake-user/toy-tiny-fold0-fold1-train v1, with fold 1)" in remote.stderr
    for fold in (0, 1):
        ours, theirs = (root / f"data/runs/{COMP}/{EXP}/fold{fold}" for root in (project, local))
        assert weights_equal(ours / "model.safetensors", theirs / "model.safetensors"), fold
        assert (ours / "oof_plain.csv").read_bytes() == (theirs / "oof_plain.csv").read_bytes()
        assert state(project, fold)["state"] == "done" and state(project, fold)["notebook"] == ["fold0", "fold1"]
        assert list((project / f"data/runs/{COMP}/{EXP}/tb/fold{fold}").glob("events.*")), fold  # the tracker heard
    lr_home, lr_local = (json.loads((root / f"data/runs/{COMP}/{EXP}/lr_find.json").read_text()) for root in
                         (project, local))  # fmt: skip
    assert lr_home["suggested_lr"] == lr_local["suggested_lr"]


@pytest.mark.slow
def test_a_unit_that_fails_in_a_shared_notebook_exits_2_and_its_partner_lands(
    project: Path, kaggle: RunningKaggle, tmp_path: Path
) -> None:
    import yaml

    (project / "configs" / COMP / "gpumetric.py").write_text(GPU_METRIC)
    competition = project / "configs" / COMP / "competition.yaml"
    values = yaml.safe_load(competition.read_text())
    values["metric"] = {"function": "gpumetric:score", "higher_is_better": True, "needs": "labels"}
    competition.write_text(yaml.safe_dump(values))
    run = built(project, home(project, kaggle, tmp_path))
    failed = run("remote-train", "--config", CONFIG, "--fold", "0", "--set", "kaggle.units_per_notebook=2",
                 timeout=400)  # fmt: skip
    assert failed.returncode == 2, failed.stderr
    assert not any(line.startswith("Traceback") for line in failed.stderr.splitlines()), failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: fold 0 failed on Kaggle: its training in the notebook") and "exited" in last, last
    assert "GPU 0 is broken" in last, last
    assert list(kaggle.kernels) == [PAIR]
    fold1 = project / f"data/runs/{COMP}/{EXP}/fold1"
    assert (fold1 / "model.safetensors").is_file() and state(project, 1)["state"] == "done"
    assert not (project / f"data/runs/{COMP}/{EXP}/fold0/model.safetensors").exists() and state(project, 0) == {}


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
    kaggle.hold = tmp_path / "hold"  # the notebook stays running until the test lets it go: Ctrl-C lands mid-run
    kaggle.hold.touch()
    # Ctrl-C's handler as in a terminal: a suite started in the background (`cmd &`, nohup) ignores SIGINT, and a
    # child inherits that, so the signal would never arrive
    interruptible = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + RUNNER
    command = [sys.executable, "-c", interruptible, "remote-train", "--config", CONFIG, "--fold", "0", "--set",
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
    kaggle.hold.unlink()

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


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
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


@pytest.mark.parametrize(
    ("accelerator", "setting", "expected"),
    [("t4x2", None, 2), ("t4x2", 1, 1), ("l4", None, 1), ("none", None, 1), ("none", 2, 2), ("l4", 2, "one")],
)
def test_units_per_notebook_is_one_per_gpu_of_a_t4x2_unless_set(
    tmp_path: Path, accelerator: str, setting: int | None, expected: int | str
) -> None:
    from pipeline.core.config import load_config
    from pipeline.core.errors import UserError
    from pipeline.kaggle.remote_push import units_per_notebook

    make_project(tmp_path)
    with in_project(tmp_path):
        cfg = load_config(CONFIG, [f"kaggle.units_per_notebook={setting}"] if setting else [])
        if isinstance(expected, str):
            with pytest.raises(UserError, match="kaggle.units_per_notebook: 2 needs a GPU per unit.*has one"):
                units_per_notebook(cfg, accelerator)
        else:
            assert units_per_notebook(cfg, accelerator) == expected


def test_units_that_stopped_together_resume_together_and_a_lone_one_is_re_paired(tmp_path: Path) -> None:
    from pipeline.core.config import load_config
    from pipeline.kaggle.remote_push import Pusher
    from pipeline.kaggle.remote_state import DONE, QUEUED, Unit, weights_path, write_state

    write_competition_config(tmp_path, n_folds=5)
    tiny_experiment(tmp_path, train=TRAIN)
    with in_project(tmp_path):
        cfg = load_config(CONFIG)
        pair, lone = f"{USER}/toy-tiny-fold0-fold1-train", f"{USER}/toy-tiny-fold2-fold3-train"
        for fold, kernel in ((0, pair), (1, pair), (3, lone)):  # fold 2 failed (forgotten: pending), 3 stopped
            write_state(cfg, Unit(fold), {"state": QUEUED, "kernel": kernel, "session": 1, "checkpoint": kernel})
        write_state(cfg, Unit(4), {"state": DONE, "kernel": f"{USER}/toy-tiny-fold4-train", "session": 1})
        weights_path(cfg, Unit(4)).write_bytes(b"weights")
        pusher = Pusher(cfg, USER, "t4x2", kaggle=None)

        def notebooks(first: int) -> list[list[int]]:
            waiting, out = pusher.waiting(Unit(first)), []
            while waiting:
                out.append(pusher.pick(waiting))
                waiting = [unit for unit in waiting if unit not in out[-1]]
            return [[unit.fold for unit in units] for units in out]

        assert notebooks(1) == [[1, 0], [3, 2]]  # fold 1's partner is fold 0 (same notebook), fold 3 re-paired
        assert notebooks(3) == [[3, 2], [0, 1]]  # Make asked for fold 3 first: re-paired with a unit waiting alone
        assert notebooks(2) == [[2, 3], [0, 1]]  # a pending fold pairs with the lone one, not into a pair


def test_each_unit_sees_its_own_lines_of_a_shared_notebook_log() -> None:
    from pipeline.kaggle.remote_state import Unit, lines_of, progress_of

    log = ["unit fold0-fold1 nonce ab session 1", "[fold0] fold 0 epoch 1/3: loss 1.0", "[fold1] fold 1 epoch 2/3: x",
           "[fold0] boom", "unit fold0: failed after 1 epoch(s)"]  # fmt: skip
    assert lines_of(Unit(0), log) == ["fold 0 epoch 1/3: loss 1.0", "boom"]
    assert progress_of(lines_of(Unit(1), log)) == (2, 3)
    assert lines_of(Unit(2), log) == ["unit fold0-fold1 nonce ab session 1", "unit fold0: failed after 1 epoch(s)"]


def test_pair_kernels_have_distinct_names_within_kaggles_title_limit(tmp_path: Path) -> None:
    from pipeline.core.config import load_config
    from pipeline.kaggle.remote_bundle import kernel_names

    make_project(tmp_path)
    with in_project(tmp_path):
        cfg = load_config(CONFIG)
        assert kernel_names(cfg, "fold0-fold1", USER) == (PAIR, "toy tiny fold0-fold1 train")
        keys = [f"fold{a}-seed{s}-fold{b}-seed{s}" for a in range(3) for b in range(3) for s in (7, 1234567)]
        names = [kernel_names(cfg, key, USER) for key in keys]
        assert len({ref for ref, _ in names}) == len(keys) and all(len(title) <= 50 for _, title in names)


def test_each_unit_of_an_ended_notebook_is_settled_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared notebook's units: one done lands (and tells the trackers), one stopped is queued to resume from this
    kernel, one failed fails with its own lines, one without a record in a killed session is queued with a strike."""
    import torch
    from safetensors.torch import save_file

    from pipeline.core import events, paths
    from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config
    from pipeline.kaggle.remote_land import read_record
    from pipeline.kaggle.remote_poll import Poller
    from pipeline.kaggle.remote_state import Unit, read_state
    from pipeline.kaggle.remote_unit import UnitRun, pack

    write_competition_config(tmp_path, n_folds=4)
    tiny_experiment(tmp_path, train=TRAIN)
    heard: list[int] = []
    monkeypatch.setattr(events, "_handlers", {"fold_trained": [lambda cfg, fold: heard.append(fold)]})
    with in_project(tmp_path):
        cfg = load_config(CONFIG)
        fp = fingerprint(cfg, TRAINING_SECTIONS)
        ended = {0: "done", 1: "stopped", 2: "failed"}
        for fold, state in ended.items():
            folder = tmp_path / "notebook" / f"fold{fold}"
            folder.mkdir(parents=True)
            save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"), metadata={"fingerprint": fp})
            (folder / "log.csv").write_text("epoch,seconds\n1,2.0\n")
            pack(UnitRun({"unit": f"fold{fold}", "session": 1}, fp, folder, state=state, code=2 if fold == 2 else 0),
                 {"nonce": "n1"})  # fmt: skip
        output = paths.KAGGLE_WORKING
        lines = ["[fold2] Traceback (most recent call last):", "[fold2] error: out of memory", "[fold0] fine"]
        kernel = f"{USER}/toy-tiny-fold0-fold1-train"
        poller = Poller(cfg, kaggle=None)
        said = {}
        for fold in range(4):
            unit = Unit(fold)
            state = {"state": "running", "kernel": kernel, "version": 1, "nonce": "n1", "session": 1,
                     "notebook": ["fold0", "fold1"]}  # fmt: skip
            record = read_record(output, unit)
            ending = ("error", "Your notebook exceeded its maximum run time", f"{kernel} v1")
            said[fold] = poller.settle(unit, state, record, ending, output, lines)
        assert said[0].startswith("done") and heard == [0]
        fold0 = tmp_path / f"data/runs/{COMP}/{EXP}/fold0"
        assert (fold0 / "model.safetensors").is_file() and (fold0 / "log.csv").is_file()
        assert read_state(cfg, Unit(1)) | {"state": "queued", "checkpoint": kernel} == read_state(cfg, Unit(1))
        assert not (tmp_path / f"data/runs/{COMP}/{EXP}/fold1/model.safetensors").exists()
        failed = read_state(cfg, Unit(2))
        assert failed["state"] == "failed" and failed["log"][-1] == "error: out of memory", failed
        assert "exited with code 2" in failed["message"] and failed["output"].endswith("fold0/.remote")
        assert read_state(cfg, Unit(3))["state"] == "queued" and read_state(cfg, Unit(3))["strikes"] == 1
