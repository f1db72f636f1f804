"""Seed bags (`train.seeds`): every fold trained once per seed in fold<k>/seed<s>/, the members' probabilities averaged
into the fold's files before scoring, members independent of the rest of the list, resumable one by one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.builders import REPO, run_main, tiny_experiment, write_competition_config
from pipeline.core import paths
from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config
from pipeline.training.checkpoint import trained_fingerprint
from pipeline.training.refit import refit_config


def stage(capsys: pytest.CaptureFixture, *args: str, code: int = 0) -> str:
    result = run_main(capsys, *args)
    assert result.returncode == code, result.stderr
    return result.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classes_of(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("id", "view")]


@pytest.fixture
def bag(project: Path, capsys: pytest.CaptureFixture) -> Path:
    """A 2-fold competition and a two-seed bag experiment with its folds built."""
    write_competition_config(project, n_train=24, n_test=4)
    config = tiny_experiment(project, train={"seeds": [7, 8], "lr": 0.05})
    stage(capsys, "folds", "--config", str(config))
    return config


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("views", ["identity,hflip", "auto"])
def test_bag_oof_is_the_mean_of_its_members_and_scores_json_says_what_each_seed_scored(
    bag: Path, capsys: pytest.CaptureFixture, views: str
) -> None:
    tta = f"tta.views=[{views}]" if views != "auto" else "tta.views=auto"
    for name in ("train", "predict"):
        stage(capsys, name, "--config", str(bag), "--set", tta)
    run = paths.project_root() / "data/runs/toy/tiny"
    for k in range(2):
        members = [pd.read_csv(run / f"fold{k}/seed{s}/oof.csv") for s in (7, 8)]
        fold = pd.read_csv(run / f"fold{k}/oof.csv")
        classes = classes_of(fold)
        assert list(fold["id"]) == list(members[0]["id"])
        assert not np.allclose(members[0][classes], members[1][classes])  # two seeds, two different models
        np.testing.assert_allclose(fold[classes], (members[0][classes] + members[1][classes]) / 2, rtol=1e-6)
        tests = [pd.read_csv(run / f"fold{k}/seed{s}/test.csv") for s in (7, 8)]
        np.testing.assert_allclose(pd.read_csv(run / f"fold{k}/test.csv")[classes],
                                   (tests[0][classes] + tests[1][classes]) / 2, rtol=1e-6)  # fmt: skip
        assert not (run / f"fold{k}/model.safetensors").exists()  # a bag's fold holds members, not a model
        marker = json.loads((run / f"fold{k}/predict.json").read_text())
        vouched = {"seed7/test_by_view.csv"} if views == "auto" else {"oof.csv", "seed7/oof.csv", "seed8/test.csv"}
        assert vouched <= set(marker["digests"])
        if views == "auto":  # the fold's per-view files are the members' mean: ensemble chooses views on the bag
            by_view = [pd.read_csv(run / f"fold{k}/{s}oof_by_view.csv") for s in ("seed7/", "seed8/", "")]
            np.testing.assert_allclose(by_view[2][classes], (by_view[0][classes] + by_view[1][classes]) / 2)
    err = stage(capsys, "ensemble", "--config", str(bag), "--set", tta)
    scores = json.loads((run / "scores.json").read_text())
    assert scores["seeds"] == [7, 8]
    bagging = scores["seed_bag"]
    assert [row["seed"] for row in bagging["seeds"]] == [7, 8] and bagging["cv"] == scores["cv"]
    assert "seed bag of 2 seeds [7, 8]" in err and "bagging" in err
    folds = pd.read_csv(paths.project_root() / "data/processed/toy/folds.csv")
    for row in bagging["seeds"]:  # a seed's CV: its members' OOF alone, with the views the bag's files hold
        if views == "auto":
            parts = [pd.read_csv(run / f"fold{k}/seed{row['seed']}/oof_by_view.csv") for k in range(2)]
            parts = [p[p["view"].isin(scores["tta_views"])].groupby("id", sort=False)[classes].mean() for p in parts]
        else:
            parts = [pd.read_csv(run / f"fold{k}/seed{row['seed']}/oof.csv").set_index("id") for k in range(2)]
        probs = pd.concat(parts).loc[folds["id"], classes].to_numpy()
        assert row["cv"] == pytest.approx(float((probs.argmax(1) == folds["label"].map(classes.index)).mean()))
    again = stage(capsys, "predict", "--config", str(bag), "--set", tta)
    assert "seed bag [7, 8] up to date" in again and "fold 0 seed 7: predictions up to date" in again
    if views == "auto":
        return
    refit = stage(capsys, "train", "--config", str(bag), "--fold", "refit")  # one full-data model: the first seed
    assert "refit: seed bag [7, 8]: one full-data model, with the first seed (7)" in refit
    first = refit_config(load_config(bag))
    assert first.train.seed == 7 and first.train.seeds == []
    assert trained_fingerprint(run / "refit/model.safetensors") == fingerprint(first, TRAINING_SECTIONS)
    assert not (run / "refit/seed7").exists()


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_member_does_not_depend_on_the_other_seeds(bag: Path, capsys: pytest.CaptureFixture) -> None:
    stage(capsys, "train", "--config", str(bag), "--fold", "0", "--seed", "8")
    run = paths.project_root() / "data/runs/toy/tiny"
    weights = run / "fold0/seed8/model.safetensors"
    before = (digest(weights), weights.stat().st_mtime_ns)
    assert not (run / "fold0/seed7").exists()  # --seed trains that member only
    plain = load_config(bag, ["train.seeds=[]", "train.seed=8"])
    assert trained_fingerprint(weights) == fingerprint(plain, TRAINING_SECTIONS)
    more = ["train.seeds=[7,8,9]"]
    err = stage(capsys, "train", "--config", str(bag), "--fold", "0", "--set", *more)
    assert "fold 0 seed 8: already trained" in err
    assert digest(weights) == before[0]
    assert (run / "fold0/seed9/model.safetensors").exists()


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_seed_outside_the_bag_and_duplicate_seeds_are_refused(bag: Path, capsys: pytest.CaptureFixture) -> None:
    err = stage(capsys, "train", "--config", str(bag), "--fold", "0", "--seed", "9", code=2)
    assert err.startswith("error: --seed 9:") and "[7, 8]" in err and len(err.strip().splitlines()) == 1
    err = stage(capsys, "train", "--config", str(bag), "--set", "train.seeds=[7,7]", code=2)
    assert err.startswith("error: train.seeds:") and len(err.strip().splitlines()) == 1
    one = load_config(bag, ["train.seeds=[5]"])  # one seed is no bag: it is train.seed
    assert one.train.seed == 5 and one.train.seeds == []
    assert paths.for_config(one).weights(0) == paths.project_root() / "data/runs/toy/tiny/fold0/model.safetensors"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_killed_member_resumes_and_the_others_are_untouched(project: Path, capsys: pytest.CaptureFixture) -> None:
    """SIGKILL mid-member (a real process): its checkpoint stays, no weights; `train --fold 0` skips the finished
    member and resumes the killed one from its own checkpoint."""
    write_competition_config(project, n_train=60, n_test=2)
    train = {"seeds": [7, 8], "epochs": 6, "batch_size": 4, "checkpoint_every": 2, "deterministic": True}
    config = tiny_experiment(project, train=train)
    stage(capsys, "folds", "--config", str(config))
    stage(capsys, "train", "--config", str(config), "--fold", "0", "--seed", "7")
    run = project / "data/runs/toy/tiny/fold0"
    finished = digest(run / "seed7/model.safetensors")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline", "train", "--config", str(config), "--fold", "0", "--seed", "8"]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = run / "seed8/work/last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None, f"training ended before writing {checkpoint}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no {checkpoint}"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (run / "seed8/model.safetensors").exists(), "a killed member must not look finished"
    epoch = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]
    assert epoch < 6, "the kill landed after training: nothing was interrupted"
    err = stage(capsys, "train", "--config", str(config), "--fold", "0")
    assert "fold 0 seed 7: already trained" in err and f"fold 0 seed 8: resuming from epoch {epoch}" in err
    assert (run / "seed8/model.safetensors").exists() and not (run / "seed8/work").exists()
    assert len(pd.read_csv(run / "seed8/log.csv")) == 6
    assert digest(run / "seed7/model.safetensors") == finished  # the finished member was not retrained


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_the_plan_counts_folds_times_seeds() -> None:
    from pipeline.core.config import Config, FoldsConfig, TrainConfig, TTAConfig
    from pipeline.reporting import planner

    rate = planner.Throughput(train_images_per_s=100.0, predict_images_per_s=200.0, predict_measured=True,
                              epochs_measured=1)  # fmt: skip
    for seeds in ([], [1, 2, 3]):
        cfg = Config(folds=FoldsConfig(n_folds=5), tta=TTAConfig(views=["identity", "hflip"]),
                     train=TrainConfig(epochs=2, seeds=seeds))  # fmt: skip
        inference, full = planner.estimate(cfg, rate, n_train=1000, n_test=400).iloc[:2].to_dict("records")
        models = 5 * max(len(seeds), 1)
        assert inference["total"] == pytest.approx(models * 2 * 400 / 200)  # models x views x test images / speed
        assert full["train"] == pytest.approx(models * 2 * 800 / 100)
        assert ("x 3 seeds" in inference["scenario"]) == bool(seeds)
