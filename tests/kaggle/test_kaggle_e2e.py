"""The Kaggle issue's acceptance path, through Make, against the fake Kaggle server and the real client:
make download -> make init -> make all -> make submit, and the server receives the submission's exact bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers.builders import REPO, write_competition

pytest_plugins = ["helpers.kaggle_env"]

SLUG = "leaf-e2e"
QUICK = "train.epochs=1 folds.n_folds=2 train.image_size=32 train.num_workers=0 train.ema=false device=cpu"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_download_init_all_submit_through_make(pipeline, fake_kaggle, tmp_path: Path) -> None:  # noqa: ANN001
    source = write_competition(tmp_path / "source", "csv", n_train=30, n_test=6)
    files = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.name != ".complete"
             and p.is_file()}  # fmt: skip
    fake_kaggle.add_competition(SLUG, files)
    env = {k: v for k, v in pipeline.env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def make(*args: str) -> subprocess.CompletedProcess:
        command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), *args]
        done = subprocess.run(command, cwd=pipeline.root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    make("download", f"COMP={SLUG}")
    raw = pipeline.root / "data/raw" / SLUG
    assert (raw / ".complete").exists() and (raw / "train.csv").read_bytes() == files["train.csv"]
    init = make("init", f"COMP={SLUG}")
    assert "submission: label" in init.stdout
    config = f"configs/{SLUG}/baseline.yaml"
    make("all", f"CONFIG={config}", f"SET={QUICK}")
    submission = pipeline.root / "submissions" / SLUG / "baseline.csv"
    assert submission.is_file()
    submitted = make("submit", f"CONFIG={config}", f"SET={QUICK}")
    assert list(fake_kaggle.uploads.values()) == [submission.read_bytes()]
    assert f"{SLUG}: submission #" in submitted.stdout and "scored 0.875" in submitted.stdout  # waited for it
    (create,) = fake_kaggle.calls("CreateSubmission")
    assert create.json()["submissionDescription"].startswith("baseline | CV accuracy")
