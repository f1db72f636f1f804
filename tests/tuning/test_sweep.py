"""Sweeps for real: Optuna trials as `python -m pipeline train` subprocesses on a tiny generated competition.

Four trials write the results table, the plot and a best config that loads as an experiment; SET reaches every
trial; integer bounds stay integers. A sweep killed with SIGKILL (the whole process group: the sweep and its
training) continues its study on the next run: finished trials stay, the killed one runs again with the same
parameters and resumes its training from the checkpoint. sweep.yaml mistakes are one `error:` line.
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
import yaml

from helpers.builders import REPO, run_main, tiny_experiment, write_competition_config

optuna = pytest.importorskip("optuna")


def write_sweep(project: Path, folder: str = "configs/toy", **values: object) -> Path:
    spec = {"trials": 4, "params": {"train.lr": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
                                    "train.epochs": {"low": 1, "high": 2}}}  # fmt: skip
    spec.update(values)
    path = project / folder / "sweep.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def sweep_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # trials are subprocesses: they must run this checkout's code
    write_competition_config(project, n_train=24, n_test=4)
    tiny_experiment(project, train={"batch_size": 8})
    return project


@pytest.mark.slow
def test_four_trials_write_table_plot_and_best_config(sweep_project: Path, capsys: pytest.CaptureFixture) -> None:
    project = sweep_project
    sweep = write_sweep(project, folder="elsewhere")  # a sweep file outside configs/<comp>/ works too
    config = project / "configs/toy/tiny.yaml"
    result = run_main(capsys, "sweep", "--config", str(config), "--sweep", str(sweep), "--set", "train.batch_size=4")
    assert result.returncode == 0, result.stderr
    folder = project / "data/runs/toy/sweeps/tiny-sweep"
    table = pd.read_csv(folder / "trials.csv")
    assert list(table["trial"]) == [0, 1, 2, 3] and set(table["state"]) == {"complete"}
    assert table["value"].between(0, 1).all()
    assert set(table["train.epochs"]) <= {1, 2} and table["train.epochs"].dtype.kind == "i"
    assert (folder / "trials.png").stat().st_size > 1000 and (folder / "study.db").exists()
    for row in table.itertuples():
        resolved = yaml.safe_load((project / f"data/runs/toy/{row.run}/config.yaml").read_text())
        assert resolved["train"]["batch_size"] == 4  # SET applies to every trial
        assert resolved["train"]["lr"] == pytest.approx(table.loc[row.Index, "train.lr"])
        assert (project / f"data/runs/toy/{row.run}/fold0/model.safetensors").exists()

    result = run_main(capsys, "sweep-best", "--config", str(config), "--sweep", str(sweep))
    assert result.returncode == 0, result.stderr
    best_path = project / "configs/toy/tiny-sweep-best.yaml"
    best = table.loc[table["value"].idxmax()]
    from pipeline.core.config import load_config

    cfg = load_config(best_path)
    assert cfg.exp == "tiny-sweep-best" and cfg.model.name == "test_efficientnet"
    assert cfg.train.lr == pytest.approx(best["train.lr"]) and cfg.train.epochs == best["train.epochs"]
    assert cfg.train.batch_size == 8  # SET is recorded as a comment, not baked into the new experiment
    assert 'SET="train.batch_size=4"' in best_path.read_text()

    # A finished sweep re-run starts nothing new.
    result = run_main(capsys, "sweep", "--config", str(config), "--sweep", str(sweep), "--set", "train.batch_size=4")
    assert result.returncode == 0 and len(pd.read_csv(folder / "trials.csv")) == 4


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_study(sweep_project: Path, capsys: pytest.CaptureFixture) -> None:
    project = sweep_project
    sweep = write_sweep(project, trials=2, params={"train.lr": {"low": 1.0e-3, "high": 1.0e-1, "log": True}})
    config = project / "configs/toy/tiny.yaml"
    args = ["sweep", "--config", str(config), "--sweep", str(sweep), "--set", "train.epochs=30 train.batch_size=4"]
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    second_log = project / "data/runs/toy/tiny-sweep-t001/fold0/log.csv"
    second_checkpoint = second_log.parent / "work/last.pt"
    deadline = time.monotonic() + 240
    # trial 0 finished, trial 1 has logged an epoch and checkpointed it (30 epochs: it is still training)
    while not (second_log.exists() and second_checkpoint.exists()):
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its training child, as a lost machine would
    process.wait()
    storage = f"sqlite:///{project / 'data/runs/toy/sweeps/tiny-sweep/study.db'}"
    before = optuna.load_study(study_name="tiny-sweep", storage=storage).trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    result = run_main(capsys, *args)
    assert result.returncode == 0, result.stderr
    after = optuna.load_study(study_name="tiny-sweep", storage=storage).trials
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert after[0].value == before[0].value and after[0].params == before[0].params
    assert after[2].params == before[1].params and after[2].user_attrs["run"] == "tiny-sweep-t001"
    trial_log = (project / "data/runs/toy/sweeps/tiny-sweep/logs/tiny-sweep-t001.log").read_text()
    assert "fold 0: resuming from epoch" in trial_log
    assert list(pd.read_csv(second_log)["epoch"]) == list(range(1, 31))


@pytest.mark.slow
def test_median_pruner_stops_a_trial_below_earlier_trials(sweep_project: Path, capsys: pytest.CaptureFixture) -> None:
    """An earlier trial scored 1.0 at every epoch; a trial with a near-zero LR scores less after epoch 1: pruned."""
    project = sweep_project
    params = {"train.lr": {"low": 1.0e-7, "high": 2.0e-7}}
    sweep = write_sweep(project, trials=2, params=params, prune={"startup_trials": 1, "warmup_epochs": 0})
    storage = f"sqlite:///{project / 'data/runs/toy/sweeps/tiny-sweep/study.db'}"
    (project / "data/runs/toy/sweeps/tiny-sweep").mkdir(parents=True)
    study = optuna.create_study(storage=storage, study_name="tiny-sweep", direction="maximize")
    distribution = optuna.distributions.FloatDistribution(1.0e-7, 2.0e-7)
    perfect = {k: 1.0 for k in range(1, 41)}
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 1.5e-7}, distributions={"train.lr": distribution},
                                              value=1.0, intermediate_values=perfect))  # fmt: skip
    config = project / "configs/toy/tiny.yaml"
    result = run_main(capsys, "sweep", "--config", str(config), "--sweep", str(sweep), "--set", "train.epochs=40")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(project / "data/runs/toy/sweeps/tiny-sweep/trials.csv")
    assert list(table["state"]) == ["complete", "pruned"] and table.loc[1, "last_epoch"] == 1
    fold = project / "data/runs/toy/tiny-sweep-t001/fold0"
    # SIGTERM stopped it (polled every 0.5 s) long before the end, even on a loaded machine
    assert len(pd.read_csv(fold / "log.csv")) < 40
    assert not (fold / "model.safetensors").exists() and not (fold / "work").exists()


LR = {"train.lr": {"low": 0.1, "high": 0.2}}
SPEC_MISTAKES = [
    ({"trials": None, "params": LR}, "set a budget: trials: N and/or time: 2h"),
    ({"params": {"train.lrr": {"low": 0.1, "high": 0.2}}}, "params.train.lrr = 0.1: unknown key(s) train.lrr"),
    (
        {"params": {"train.epochs": {"low": 1.5, "high": 3}}},
        "params.train.epochs = 1.5: train.epochs: expected an integ",
    ),
    ({"params": {"train.lr": {"low": 0.2, "high": 0.1}}}, "params.train.lr: low (0.2) must be below high (0.1)"),
    ({"params": {"train.keep": {"choices": ["best", "worst"]}}}, "params.train.keep = 'worst': train.keep: 'worst' is"),
    ({"time": "soon", "params": LR}, "time: 'soon' is not a duration"),
    ({"trials": 0, "params": LR}, "trials: expected an integer >= 1, got 0"),
    ({"fold": 5, "params": LR}, "fold: 5 is not a fold (folds.n_folds is 2)"),
    ({"params": {"train.lr": [0.1, 0.2]}}, "params.train.lr: expected {low: .., high: ..} or {choices: [..]}"),
    ({"params": LR, "epochs": 3}, "unknown key(s) epochs; known: name, trials, time"),
]


@pytest.mark.parametrize(("spec", "message"), SPEC_MISTAKES)
def test_sweep_file_mistakes_are_one_error_line(
    sweep_project: Path, capsys: pytest.CaptureFixture, spec: dict, message: str
) -> None:
    path = sweep_project / "configs/toy/sweep.yaml"
    path.write_text(yaml.safe_dump({"trials": 2, **spec}))
    result = run_main(capsys, "sweep", "--config", str(sweep_project / "configs/toy/tiny.yaml"), "--sweep", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and message in lines[0], result.stderr
