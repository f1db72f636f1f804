"""Crash safety with real processes: `python -m pipeline train` killed with SIGKILL, or stopped with SIGTERM/SIGINT.

A killed run leaves its last checkpoint (work/last.pt, written atomically) and no weights file, so it never looks
finished; re-running the same command resumes from that checkpoint (model, optimizer, scheduler, scaler, EMA, RNG
states, epoch and step) and, in deterministic CPU mode, ends with exactly the weights of an uninterrupted run.
SIGTERM/SIGINT save a checkpoint and exit 75. Everything runs in subprocesses: the signal is real, not simulated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers.builders import REPO, run_cli, tiny_experiment, write_competition
from pipeline.__main__ import main
from pipeline.data.layout import infer_data

EPOCHS = 2
TRAIN = {"epochs": EPOCHS, "batch_size": 4, "deterministic": True, "checkpoint_every": 2, "ema": True, "mixup": 0.2}
# Same between runs: losses and scores. Different: wall-clock columns.
CLOCK_COLUMNS = ("seconds", "train_images_per_s", "data_wait_share")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A project with a 120-row competition (60 training rows in fold 0: 15 steps an epoch) and its folds."""
    root = tmp_path_factory.mktemp("crash")
    env = {
        "PIPELINE_ROOT": str(root),
        "KAGGLE_INPUT_ROOT": str(root / "no-kaggle-input"),
        "KAGGLE_WORKING_ROOT": str(root / "no-kaggle-working"),
        "PYTHONPATH": str(REPO),
    }
    raw = write_competition(root / "data" / "raw" / "toy", "csv", n_train=120, n_test=4)
    data, metric, _ = infer_data(raw)
    (root / "configs" / "toy").mkdir(parents=True)
    competition = {"data": vars(data), "metric": metric, "folds": {"n_folds": 2, "seed": 0}}
    (root / "configs" / "toy" / "competition.yaml").write_text(yaml.safe_dump(competition))
    reference = tiny_experiment(root, name="reference", train=TRAIN)
    with pytest.MonkeyPatch.context() as patch:  # folds in this process: no 5 s of imports
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["folds", "--config", str(reference)]) == 0
    return root, env


@pytest.fixture(scope="module")
def reference(workspace: tuple[Path, dict[str, str]]) -> Path:
    """The fold-0 weights of an uninterrupted run."""
    root, env = workspace
    config = root / "configs" / "toy" / "reference.yaml"
    result = run_cli("train", "--config", str(config), "--fold", "0", cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    return root / "data/runs/toy/reference/fold0"


def start_training(root: Path, env: dict[str, str], config: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline", "train", "--config", str(config), "--fold", "0"]
    return subprocess.Popen(command, cwd=root, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll until `path` exists (the first mid-epoch checkpoint), while `process` is still training."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended before writing {path}:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.005)


def assert_same_run(run: Path, reference: Path) -> None:
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    logs = [pd.read_csv(folder / "log.csv").drop(columns=list(CLOCK_COLUMNS), errors="ignore")
            for folder in (reference, run)]  # fmt: skip
    pd.testing.assert_frame_equal(logs[0], logs[1])
    assert list(logs[1]["epoch"]) == list(range(1, EPOCHS + 1))


def checkpoint_position(path: Path) -> tuple[int, int]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["epoch"], state["step"]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_sigkill_then_rerun_resumes_to_identical_weights(
    workspace: tuple[Path, dict[str, str]], reference: Path
) -> None:
    root, env = workspace
    config = tiny_experiment(root, name="killed", train=TRAIN)
    run = root / "data/runs/toy/killed/fold0"
    process = start_training(root, env, config)
    wait_for(run / "work" / "last.pt", process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    assert not (run / "model.safetensors").exists(), "a killed run must not look finished"
    epoch, step = checkpoint_position(run / "work" / "last.pt")
    assert epoch < EPOCHS, "the kill landed after training: nothing was interrupted"

    resumed = run_cli("train", "--config", str(config), "--fold", "0", cwd=root, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch {epoch} step {step}" in resumed.stderr
    assert_same_run(run, reference)
    assert not (run / "work").exists()  # the checkpoint goes once the weights exist


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_checkpoint_exit_75_and_resume(
    workspace: tuple[Path, dict[str, str]], reference: Path, sig: signal.Signals
) -> None:
    root, env = workspace
    config = tiny_experiment(root, name=f"stopped-{sig.name.lower()}", train=TRAIN)
    run = root / f"data/runs/toy/stopped-{sig.name.lower()}/fold0"
    process = start_training(root, env, config)
    wait_for(run / "work" / "last.pt", process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 75, stderr
    assert f"stopped ({sig.name})" in stderr and "re-run the same command to resume" in stderr
    assert "Traceback" not in stderr
    assert (run / "work" / "last.pt").exists() and not (run / "model.safetensors").exists()
    epoch, step = checkpoint_position(run / "work" / "last.pt")
    assert epoch < EPOCHS

    resumed = run_cli("train", "--config", str(config), "--fold", "0", cwd=root, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch {epoch} step {step}" in resumed.stderr
    assert_same_run(run, reference)
