"""train.pseudo and train.soft_labels (issue 14, items 1-2): pseudo-labelled test rows join every fold's training side
and never a validation fold, the threshold filters them, soft targets and distillation targets reach the loss as
computed, the source's identity is part of the training fingerprint, and `make pseudo`'s stage writes a round that
trains, ensembles and records its source. Most tests fabricate a source run (oof.csv, test.csv, scores.json) on the
competition's real folds.csv; one trains a real source and a pseudo round end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.builders import REPO, fingerprint_before_newer_keys, run_main, tiny_experiment, write_source_run
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core.config import (
    TRAINING_SECTIONS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    SoftLabelsConfig,
    TrainConfig,
    fingerprint,
    load_config,
    to_dict,
    validate_sources,
)
from pipeline.data import soft_targets
from pipeline.data.sources import sources_stamp
from pipeline.training import fold as fold_module
from pipeline.training import losses

CLASSES_COLUMN_START = 1


@pytest.fixture
def toy(project: Path, capsys: pytest.CaptureFixture) -> Path:
    """A tiny competition with its folds built; returns the project."""
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    return project


def pseudo_config(project: Path, name: str = "student", **pseudo: object) -> Path:
    return tiny_experiment(project, name=name, train={"pseudo": {"from": "src", **pseudo}})


def prepared(config: Path, fold: int) -> fold_module.Fold:
    cfg = load_config(config)
    return fold_module.prepare_fold(cfg, fold, torch.device("cpu"), "fp")


def test_pseudo_rows_join_every_training_side_and_no_validation_fold(toy: Path) -> None:
    _, test = write_source_run(toy)
    config = pseudo_config(toy, threshold=0.0)
    test_images = set(pd.read_csv(toy / "data/processed/toy/test.csv", dtype=str)["image"])
    for fold in (0, 1):
        f = prepared(config, fold)
        train_images = f.train_loader.dataset.images
        assert test_images <= set(train_images)  # every test row (threshold 0) in this fold's training side
        assert not test_images & set(f.valid_loader.dataset.images)  # never validated on
        folds = pd.read_csv(toy / "data/processed/toy/folds.csv")
        assert len(train_images) == int((folds["fold"] != fold).sum()) + len(test)
        assert len(f.valid_loader.dataset) == int((folds["fold"] == fold).sum())  # validation rows unchanged


def test_threshold_keeps_the_rows_the_source_was_sure_of(toy: Path) -> None:
    _, test = write_source_run(toy)
    probs = test.iloc[:, CLASSES_COLUMN_START:].to_numpy()
    threshold = float(np.median(probs.max(axis=1)))  # about half the rows pass
    expected = int((probs.max(axis=1) >= threshold).sum())
    assert 0 < expected < len(test)
    rows, targets = soft_targets.pseudo_rows(load_config(pseudo_config(toy, threshold=threshold)))
    assert len(rows) == expected
    sure = test[probs.max(axis=1) >= threshold]
    assert list(rows["id"]) == list(sure["id"])
    np.testing.assert_array_equal(targets.argmax(axis=1), probs[probs.max(axis=1) >= threshold].argmax(axis=1))
    assert set(np.unique(targets)) <= {0.0, 1.0}  # hard pseudo-labels: one-hot on the source's argmax
    f = prepared(pseudo_config(toy, threshold=threshold), 0)
    folds = pd.read_csv(toy / "data/processed/toy/folds.csv")
    assert len(f.train_loader.dataset) == int((folds["fold"] != 0).sum()) + expected


def test_soft_pseudo_targets_are_the_source_probabilities_times_the_weight(toy: Path) -> None:
    _, test = write_source_run(toy)
    config = pseudo_config(toy, soft=True, weight=0.5)
    f = prepared(config, 0)
    dataset = f.train_loader.dataset
    n_labelled = len(dataset) - len(test)
    probs = test.iloc[:, CLASSES_COLUMN_START:].to_numpy(dtype=np.float32)
    np.testing.assert_allclose(dataset.targets[n_labelled:], 0.5 * probs, rtol=1e-5, atol=1e-6)
    _, target = dataset[n_labelled]  # what the loader hands the loss
    np.testing.assert_allclose(target.numpy(), 0.5 * probs[0], rtol=1e-5, atol=1e-6)
    criterion = losses.build_criterion(f.cfg, f.train_targets, mixing=f.dense_targets)
    logits = torch.randn(2, len(f.cfg.data.classes))
    rows = torch.as_tensor(dataset.targets[[0, n_labelled]])
    per_row = -(torch.as_tensor(rows) * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.isclose(criterion(logits, rows), per_row.mean())  # the pseudo row's loss counts half


def test_distillation_target_is_the_mix_of_one_hot_and_the_source_oof(toy: Path) -> None:
    oof, _ = write_source_run(toy)
    config = tiny_experiment(toy, name="student", train={"soft_labels": {"from": "src", "alpha": 0.3},
                                                         "label_smoothing": 0.1})  # fmt: skip
    f = prepared(config, 0)
    cfg = f.cfg
    folds = pd.read_csv(toy / "data/processed/toy/folds.csv", dtype=str)
    row = folds[folds["fold"] != "0"].iloc[0]
    one_hot = np.eye(len(cfg.data.classes))[cfg.data.classes.index(row["label"])]
    source = oof.set_index("id").loc[row["id"], cfg.data.classes].to_numpy(dtype=float)
    mixed = 0.7 * one_hot + 0.3 * source / source.sum()
    expected = mixed * 0.9 + 0.1 / len(cfg.data.classes)  # label smoothing applies on top
    np.testing.assert_allclose(f.train_loader.dataset.targets[0], expected, rtol=1e-5)


def test_mixup_mixes_dense_targets_with_the_image_lambda(toy: Path) -> None:
    cfg = load_config(pseudo_config(toy, soft=True))
    mixer = losses.BatchMixer(cfg.train.__class__(mixup=0.4), len(cfg.data.classes), "single_label", "classifier")
    images = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.25, 0.25]])
    mixed_images, mixed = mixer(images, targets)
    lam = 1 - float(mixed_images[0].mean())  # image 0 (zeros) mixed with image 1 (ones) by lam
    expected = targets * lam + targets.flip(0) * (1 - lam)
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


def test_settings_are_fingerprinted_the_source_identity_follows_it_and_keys_off_change_nothing(toy: Path) -> None:
    write_source_run(toy)
    base = load_config(tiny_experiment(toy, name="student"))
    older = fingerprint_before_newer_keys(base)
    assert fingerprint(base, TRAINING_SECTIONS) == older  # runs trained before the keys existed stay valid
    assert sources_stamp(base) == ""  # keys off: no source identity either
    on = load_config(pseudo_config(toy))
    assert fingerprint(on, TRAINING_SECTIONS) != older  # the settings are fingerprinted once on
    before = sources_stamp(on)
    assert json.loads(before)["pseudo"]["name"] == "src"
    write_source_run(toy, seed=1)  # the source re-ran: other predictions, another identity beside the fingerprint
    assert sources_stamp(on) != before
    distil = load_config(tiny_experiment(toy, name="distil", train={"soft_labels": {"from": "src"}}))
    assert fingerprint(distil, TRAINING_SECTIONS) not in (older, fingerprint(on, TRAINING_SECTIONS))


def test_config_writes_the_from_key_under_its_yaml_name(toy: Path) -> None:
    cfg = load_config(pseudo_config(toy, threshold=0.8))
    assert cfg.train.pseudo.from_ == "src" and to_dict(cfg)["train"]["pseudo"]["from"] == "src"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_make_pseudo_round_trains_ensembles_and_records_its_source(toy: Path, capsys: pytest.CaptureFixture) -> None:
    base = tiny_experiment(toy, name="base", train={"pseudo": {"threshold": 0.0}})  # off (no from); the round keeps it
    run_chain(capsys, base)
    result = run_main(capsys, "pseudo", "--config", str(base), "--from", "base")
    assert result.returncode == 0, result.stderr
    config = Path(result.stdout.strip())
    assert config.name == "base-pseudo.yaml" and load_config(config).train.pseudo.from_ == "base"
    logs = run_chain(capsys, config)
    assert "pseudo-labelled test rows from base joined the training side" in logs["train"]
    scores = json.loads((toy / "data/runs/toy/base-pseudo/scores.json").read_text())
    test = pd.read_csv(toy / "data/runs/toy/base/test.csv")
    expected = len(test)  # threshold 0: every test row
    assert 0 < expected and scores["pseudo"]["rows"] == expected and scores["pseudo"]["threshold"] == 0.0
    assert scores["pseudo"]["source"]["name"] == "base" and "cv_note" in scores
    reused = run_main(capsys, "pseudo", "--config", str(base), "--from", "base")  # make pseudo again: same round
    assert reused.returncode == 0 and reused.stdout == result.stdout, reused.stderr
    again = run_main(capsys, "pseudo", "--config", str(config), "--from", "base-pseudo")  # round two
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()).name == "base-pseudo2.yaml"
    run_chain(capsys, Path(again.stdout.strip()))  # round two trains on round one's test predictions
    second = json.loads((toy / "data/runs/toy/base-pseudo2/scores.json").read_text())
    assert second["pseudo"]["source"]["name"] == "base-pseudo"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_stopped_pseudo_fold_resumes_and_a_changed_source_refuses_its_checkpoint(
    toy: Path, capsys: pytest.CaptureFixture
) -> None:
    write_source_run(toy)
    config = pseudo_config(toy, threshold=0.0)
    args = ("train", "--config", str(config), "--fold", "0", "--set", "train.epochs=2")
    stopped = run_main(capsys, *args, "--set", "train.time_budget=0.001")  # stops (resumable) after its first step
    assert stopped.returncode == 75, stopped.stderr
    checkpoint = toy / "data/runs/toy/student/fold0/work/last.pt"
    made_under = torch.load(checkpoint, weights_only=True)["fingerprint"]
    assert made_under == fingerprint(load_config(config, ["train.epochs=2"]), TRAINING_SECTIONS)
    write_source_run(toy, seed=1)  # the source re-ran meanwhile: the checkpoint is not resumed on other labels
    changed = run_main(capsys, *args)
    assert changed.returncode == 2 and "other predictions of its train.pseudo" in changed.stderr, changed.stderr
    write_source_run(toy, seed=0)  # the source as it was
    resumed = run_main(capsys, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch" in resumed.stderr and "pseudo-labelled test rows" in resumed.stderr
    write_source_run(toy, seed=1)  # a source that re-ran after training: the trained fold is not reused silently
    stale = run_main(capsys, *args)
    assert stale.returncode == 2 and "model.safetensors was made on other predictions" in stale.stderr, stale.stderr


@pytest.mark.slow  # ~30-120 s: every stage of the round is a `python -m pipeline` subprocess under Make
def test_make_pseudo_writes_the_round_and_runs_its_chain(toy: Path, capsys: pytest.CaptureFixture) -> None:
    base = tiny_experiment(toy, name="base")
    run_chain(capsys, base)
    env = {**os.environ, "PIPELINE_ROOT": str(toy)}
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # a make inside `make test`
        env.pop(name, None)
    command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "pseudo", "CONFIG=configs/toy/base.yaml"]
    first = subprocess.run([*command, "FROM=base"], cwd=toy, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pipeline train" in first.stdout and (toy / "submissions/toy/base-pseudo.csv").is_file()
    assert json.loads((toy / "data/runs/toy/base-pseudo/scores.json").read_text())["pseudo"]["source"]["name"] == "base"
    test = toy / "data/runs/toy/base/test.csv"  # the source re-ran with other predictions: Make sends the round back
    probs = pd.read_csv(test)
    probs.iloc[:, 1:] = probs.iloc[:, 1:].to_numpy()[:, ::-1]
    probs.to_csv(test, index=False)
    (toy / "data/runs/toy/base/scores.json").touch()
    round_config = "CONFIG=configs/toy/base-pseudo.yaml"
    stale = subprocess.run([*command[:-2], "all", round_config], cwd=toy, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert stale.returncode == 2 and "other predictions of its train.pseudo" in stale.stderr, stale.stdout
    missing = subprocess.run(command, cwd=toy, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 2 and len(errors) == 1 and "FROM=" in errors[0], missing.stderr


def test_a_regression_head_refuses_soft_targets() -> None:
    cfg = Config(data=DataConfig(task="ordinal", classes=["0", "1", "2"]), model=ModelConfig(head="regression"),
                 train=TrainConfig(soft_labels=SoftLabelsConfig(from_="src")))  # fmt: skip
    with pytest.raises(ConfigError, match="train.soft_labels: a regression head"):
        validate_sources(cfg)
    validate_sources(Config(data=DataConfig(task="ordinal", classes=["0", "1", "2"])))  # keys off: nothing to refuse


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_blend_is_a_source_unless_it_holds_the_experiment(toy: Path, capsys: pytest.CaptureFixture) -> None:
    _, test = write_source_run(toy, name="blend/duo", weights={"a": 0.5, "b": 0.5})
    cfg = load_config(tiny_experiment(toy, name="student", train={"pseudo": {"from": "duo", "threshold": 0.0}}))
    assert json.loads(sources_stamp(cfg))["pseudo"]["kind"] == "blend"
    rows, _ = soft_targets.pseudo_rows(cfg)
    assert list(rows["id"]) == list(test["id"].astype(str))
    write_source_run(toy, name="blend/duo", weights={"student": 0.5, "b": 0.5})
    result = run_main(capsys, "train", "--config", str(toy / "configs/toy/student.yaml"), "--fold", "0")
    assert result.returncode == 2 and "blend that contains this experiment (student)" in result.stderr


def test_class_counts_follow_the_labels_however_strong_the_distillation(toy: Path) -> None:
    write_source_run(toy)
    config = tiny_experiment(toy, name="student", train={"soft_labels": {"from": "src", "alpha": 1.0},
                                                         "class_weights": "balanced"})  # fmt: skip
    f = prepared(config, 0)
    folds = pd.read_csv(toy / "data/processed/toy/folds.csv", dtype=str)
    labels = folds.loc[folds["fold"] != "0", "label"]
    np.testing.assert_array_equal(f.train_targets, [f.cfg.data.classes.index(label) for label in labels])
