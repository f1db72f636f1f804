"""The ensemble stage on skewed single-label OOF: per-class offsets in thresholds.json when the metric weights classes
equally (and only then), the CV before and after in scores.json, the folds' test mean in log space, the ensemble-vs-
folds check, and the submission deciding with the same offsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.builders import run_main

CLASSES = ["big", "mid", "small"]
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true", "ignore:A single label")


def skewed_probs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A model that knows the classes but leans to the majority (logit +2.5 on `big`)."""
    logits = rng.normal(0, 1.0, (len(labels), 3))
    logits[np.arange(len(labels)), labels] += 1.8
    logits[:, 0] += 2.5
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def build(project: Path, metric: str, n: int = 900, n_test: int = 300) -> None:
    """competition.yaml (holdout labels in solution.csv), baseline.yaml, folds.csv, 5 folds' oof.csv and test.csv."""
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    test_labels = rng.choice(3, size=n_test, p=[0.7, 0.2, 0.1])
    ids, test_ids, folds = [f"r{i:04d}" for i in range(n)], [f"t{i:04d}" for i in range(n_test)], np.arange(n) % 5
    configs, raw = project / "configs/toy", project / "data/raw/toy"
    configs.mkdir(parents=True)
    raw.mkdir(parents=True)
    data = {"classes": CLASSES, "holdout": "solution.csv", "test_csv": None}
    (configs / "competition.yaml").write_text(yaml.safe_dump({"data": data, "metric": metric,
                                                              "folds": {"n_folds": 5}}))  # fmt: skip
    (configs / "baseline.yaml").write_text(yaml.safe_dump({"tta": {"views": ["identity"]}}))
    pd.DataFrame({"id": test_ids, "label": [CLASSES[k] for k in test_labels]}).to_csv(raw / "solution.csv", index=False)
    processed = project / "data/processed/toy"
    processed.mkdir(parents=True)
    named = [CLASSES[k] for k in labels]
    pd.DataFrame({"id": ids, "image": ids, "label": named, "fold": folds}).to_csv(processed / "folds.csv", index=False)
    oof = pd.DataFrame(skewed_probs(labels, rng), columns=CLASSES)
    oof.insert(0, "id", ids)
    for k in range(5):
        run = project / f"data/runs/toy/baseline/fold{k}"
        run.mkdir(parents=True)
        oof[folds == k].to_csv(run / "oof.csv", index=False)
        test = pd.DataFrame(skewed_probs(test_labels, rng), columns=CLASSES)
        test.insert(0, "id", test_ids)
        test.to_csv(run / "test.csv", index=False)


def test_macro_f1_gets_offsets_and_the_submission_uses_them(project: Path, capsys: pytest.CaptureFixture) -> None:
    build(project, "f1_macro")
    result = run_main(capsys, "ensemble", "--config", "configs/toy/baseline.yaml")
    assert result.returncode == 0, result.stderr
    run = project / "data/runs/toy/baseline"
    decision = json.loads((run / "thresholds.json").read_text())
    scores = json.loads((run / "scores.json").read_text())
    assert decision["kind"] == "prior_shift" and decision["nested_cv"] > decision["argmax_cv"]
    assert scores["thresholds"] == "prior_shift" and scores["fold_average"] == "log-probabilities"
    assert scores["cv_thresholded"] > scores["cv"] + 0.05  # the metric before and after
    assert scores["holdout_thresholded"] > scores["holdout"]  # and on rows no fit has seen
    check = scores["ensemble_vs_folds"]
    assert set(check) == {"oof", "holdout", "worse"} and len(check["holdout"]["folds"]) == 5
    # the submission decides with the same offsets as scores.json's holdout_thresholded
    assert run_main(capsys, "submission", "--config", "configs/toy/baseline.yaml").returncode == 0
    submitted = pd.read_csv(project / "submissions/toy/baseline.csv")
    blend = pd.read_csv(run / "test.csv")
    plain = np.array(CLASSES)[blend[CLASSES].to_numpy().argmax(axis=1)]
    assert (submitted["label"] != plain).sum() > 0  # offsets moved decisions
    truth = pd.read_csv(project / "data/raw/toy/solution.csv")["label"]
    from sklearn.metrics import f1_score

    assert f1_score(truth, submitted["label"], average="macro") == pytest.approx(scores["holdout_thresholded"])


def test_report_shows_per_class_recall_of_folds_and_ensemble(project: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline.core import paths
    from pipeline.core.config import load_config
    from pipeline.reporting.class_recall import recall_table
    from pipeline.reporting.report import read_oof

    build(project, "f1_macro")
    assert run_main(capsys, "ensemble", "--config", "configs/toy/baseline.yaml").returncode == 0
    cfg = load_config(project / "configs/toy/baseline.yaml")
    folds, targets, probs = read_oof(cfg, paths.for_config(cfg))
    table = recall_table(cfg, folds, targets, probs)
    assert list(table.columns) == ["class", "share", *[f"fold{k}" for k in range(5)], "all OOF",
                                   "held-out mean fold", "held-out ensemble"]  # fmt: skip
    small = table.set_index("class").loc["small"]
    plain_recall = np.mean(probs[targets == 2].argmax(axis=1) == 2)
    assert small["all OOF"] > plain_recall + 0.1  # under the offsets the minority is found far more often
    assert 0 < small["held-out ensemble"] <= 1


def test_accuracy_keeps_argmax_and_the_plain_mean(project: Path, capsys: pytest.CaptureFixture) -> None:
    """Accuracy is unchanged: no offsets, the folds' plain mean of probabilities, argmax submission."""
    build(project, "accuracy")
    assert run_main(capsys, "ensemble", "--config", "configs/toy/baseline.yaml").returncode == 0
    run = project / "data/runs/toy/baseline"
    assert json.loads((run / "thresholds.json").read_text()) == {"kind": "none"}
    scores = json.loads((run / "scores.json").read_text())
    assert scores["fold_average"] == "probabilities" and scores["cv_thresholded"] == scores["cv"]
    folds = [pd.read_csv(run / f"fold{k}/test.csv")[CLASSES].to_numpy() for k in range(5)]
    assert np.allclose(pd.read_csv(run / "test.csv")[CLASSES].to_numpy(), np.mean(folds, axis=0))
