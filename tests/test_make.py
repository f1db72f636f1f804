"""Make owns the graph: its paths agree with pipeline/core/paths.py, and a second `make all` does no work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.builders import REPO, tiny_experiment
from helpers.chain import write_competition_yaml
from pipeline.core.paths import Paths


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_ROOT": str(project)}
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # a make inside `make test`
        env.pop(name, None)
    command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), *args]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def make_project(project: Path) -> Path:
    """A project folder that shares this checkout's virtualenv (Make's install stamp included)."""
    return project


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("sample", ["", "50"])
def test_make_paths_match_python(make_project: Path, sample: str) -> None:
    write_competition_yaml(make_project, "csv")
    config = tiny_experiment(make_project)
    result = make(make_project, "paths", f"CONFIG={config.relative_to(make_project)}", f"SAMPLE={sample}")
    assert result.returncode == 0, result.stderr
    facts = dict(item.split("=", 1) for item in result.stdout.split())
    expected = Paths("toy", "tiny", int(sample or 0))
    root = make_project
    assert root / facts["folds"] == expected.folds_csv
    assert root / facts["run"] == expected.run
    assert root / facts["submission"] == expected.submission
    assert root / facts["raw_stamp"] == expected.raw_stamp
    assert root / facts["overrides_stamp"] == expected.overrides_stamp
    assert facts["n_folds"] == "2"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_make_all_then_nothing_to_retrain(make_project: Path) -> None:
    write_competition_yaml(make_project, "csv")
    config = str(tiny_experiment(make_project).relative_to(make_project))
    first = make(make_project, "all", f"CONFIG={config}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pipeline train" in first.stdout and "CV accuracy" in first.stdout
    assert "this run trained fold(s) 0, 1" in first.stdout
    assert (make_project / "submissions/toy/tiny.csv").is_file()
    second = make(make_project, "all", f"CONFIG={config}")
    assert second.returncode == 0, second.stderr
    assert "pipeline train" not in second.stdout and "pipeline predict" not in second.stdout
    assert "nothing retrained" in second.stdout
    # SET=: a new override runs the stages once (Python finds every fold current and skips it), and says nothing was
    # retrained; the same SET again starts no stage at all (Make sees the overrides' stamp unchanged).
    for attempt in ("first", "again"):
        with_set = make(make_project, "all", f"CONFIG={config}", "SET=train.num_workers=0")
        assert with_set.returncode == 0, with_set.stdout + with_set.stderr
        assert "nothing retrained" in with_set.stdout and "trained fold" not in with_set.stdout, with_set.stdout
        ran = [
            stage for stage in ("train", "predict", "ensemble", "submission") if f"pipeline {stage}" in with_set.stdout
        ]
        assert ran == (["train", "predict", "ensemble", "submission"] if attempt == "first" else []), attempt
    (make_project / "data/runs/toy/tiny/scores.json").unlink()  # deleted by hand, the submission still there
    third = make(make_project, "all", f"CONFIG={config}")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "pipeline ensemble" in third.stdout and "pipeline train" not in third.stdout
    refit = make(make_project, "refit", f"CONFIG={config}")  # the full-data refit: its own target and folder
    assert refit.returncode == 0, refit.stdout + refit.stderr
    assert "train --config" in refit.stdout and "--fold refit" in refit.stdout
    assert (make_project / "data/runs/toy/tiny/refit/test.csv").is_file()
    assert "pipeline ensemble" in make(make_project, "ensemble", f"CONFIG={config}").stdout  # a new refit re-blends
    again = make(make_project, "refit", f"CONFIG={config}")
    assert again.returncode == 0 and "pipeline train" not in again.stdout and "pipeline predict" not in again.stdout


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_missing_config_or_one_with_a_space_is_our_error(make_project: Path) -> None:
    write_competition_yaml(make_project, "csv")
    tiny_experiment(make_project)
    missing = make(make_project, "train", "CONFIG=configs/toy/nope.yaml")
    assert missing.returncode != 0
    assert "error: config file configs/toy/nope.yaml not found" in missing.stderr, missing.stderr
    assert "No rule to make target" not in missing.stderr
    spaced = make(make_project, "train", "CONFIG=configs/my toy/tiny.yaml")
    assert spaced.returncode != 0 and "contains a space" in spaced.stderr and "No rule" not in spaced.stderr


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_seed_bag_is_one_make_target_per_fold_and_seed(make_project: Path) -> None:
    """Make's member paths are paths.py's; each member is its own train target (so `make -j2 train` runs two at a
    time), predict fold k waits for its members only, and with every file in place nothing runs."""
    write_competition_yaml(make_project, "csv")
    config = str(tiny_experiment(make_project, train={"seeds": [7, 8]}).relative_to(make_project))
    result = make(make_project, "paths", f"CONFIG={config}")
    assert result.returncode == 0, result.stderr
    facts = dict(item.split("=", 1) for item in result.stdout.split())
    expected = Paths("toy", "tiny")
    members = [expected.member(seed).weights(k) for k in range(2) for seed in (7, 8)]
    assert [make_project / p for p in facts["weights"].split(",")] == members
    assert members[1] == expected.member_dir(0, 8) / "model.safetensors"
    assert facts["seeds"] == "7,8"
    inputs = [expected.raw_stamp, make_project / "configs/toy/competition.yaml", make_project / config,
              expected.folds_csv]  # fmt: skip
    outputs = [*members, *(expected.test_probs(k) for k in range(2))]
    for age, path in enumerate([*inputs, *outputs]):  # every file older than the ones made from it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    assert make(make_project, "-q", "predict", f"CONFIG={config}").returncode == 0  # up to date: nothing to do
    os.utime(members[1])  # member (0, 8) retrained
    planned = make(make_project, "-n", "-j2", "predict", f"CONFIG={config}")
    assert " predict --config" in planned.stdout and "--fold 0" in planned.stdout and "--fold 1" not in planned.stdout
    assert " train " not in planned.stdout
    for path in members:
        path.unlink()
    planned = make(make_project, "-n", "-j2", "train", f"CONFIG={config}").stdout.splitlines()
    trained = sorted(line.split("--fold ")[1] for line in planned if " train --config" in line)
    assert trained == ["0 --seed 7", "0 --seed 8", "1 --seed 7", "1 --seed 8"]
