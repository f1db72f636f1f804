"""train.pseudo and train.soft_labels (issue 14, items 1-2): pseudo-labelled test rows join every fold's training side
and never a validation fold, the threshold filters them, soft targets and distillation targets reach the loss as
computed, the source's identity is part of the training fingerprint, and `make pseudo`'s stage writes a round that
trains, ensembles and records its source. Most tests fabricate a source run (oof.csv, test.csv, scores.json) on the
competition's real folds.csv; one trains a real source and a pseudo round end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.builders import run_main, tiny_experiment, write_source_run
from pipeline.core.config import NOT_FINGERPRINTED, TRAINING_SECTIONS, fingerprint, load_config, to_dict
from pipeline.data import soft_targets
from pipeline.training import fold as fold_module
from pipeline.training import recipe
from test_chain import run_chain, write_competition_yaml

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
    criterion = recipe.build_criterion(f.cfg, f.train_targets, mixing=f.dense_targets)
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
    mixer = recipe.BatchMixer(cfg.train.__class__(mixup=0.4), len(cfg.data.classes), "single_label", "classifier")
    images = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.25, 0.25]])
    mixed_images, mixed = mixer(images, targets)
    lam = 1 - float(mixed_images[0].mean())  # image 0 (zeros) mixed with image 1 (ones) by lam
    expected = targets * lam + targets.flip(0) * (1 - lam)
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


def test_source_changes_the_fingerprint_and_keys_off_keep_the_old_one(toy: Path) -> None:
    write_source_run(toy)
    base = load_config(tiny_experiment(toy, name="student"))
    values = {key: to_dict(base)[key] for key in TRAINING_SECTIONS}
    for section, key in (*NOT_FINGERPRINTED, ("train", "swa"), ("train", "pseudo"), ("train", "soft_labels")):
        values[section].pop(key, None)  # what the fingerprint hashed before these keys existed
    older = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    assert fingerprint(base, TRAINING_SECTIONS) == older  # runs trained before the keys existed stay valid
    on = load_config(pseudo_config(toy))
    before = fingerprint(on, TRAINING_SECTIONS)
    assert before != older
    write_source_run(toy, seed=1)  # the source re-ran: other predictions
    assert fingerprint(on, TRAINING_SECTIONS) != before
    distil = load_config(tiny_experiment(toy, name="distil", train={"soft_labels": {"from": "src"}}))
    assert fingerprint(distil, TRAINING_SECTIONS) not in (older, before)


def test_config_writes_the_from_key_under_its_yaml_name(toy: Path) -> None:
    cfg = load_config(pseudo_config(toy, threshold=0.8))
    assert cfg.train.pseudo.from_ == "src" and to_dict(cfg)["train"]["pseudo"]["from"] == "src"


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
    again = run_main(capsys, "pseudo", "--config", str(config), "--from", "base-pseudo")  # round two
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()).name == "base-pseudo2.yaml"
