"""Per-class logit offsets (pipeline.inference.prior_shift): fitted on OOF, kept only when nested CV improves,
and the ensemble-vs-folds check (pipeline.inference.fold_check), on synthetic arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.metrics import f1_macro, weights_classes_equally
from pipeline.inference import prior_shift
from pipeline.inference.fold_check import ensemble_vs_folds

SHARES = (0.70, 0.20, 0.10)
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true", "ignore:A single label")


def skewed_oof(n: int = 1500, seed: int = 0, bias: float = 2.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, probs, folds): a model that knows the classes but over-predicts the majority by `bias` in logits."""
    rng = np.random.default_rng(seed)
    targets = rng.choice(len(SHARES), size=n, p=SHARES)
    logits = rng.normal(0, 1.0, (n, len(SHARES)))
    logits[np.arange(n), targets] += 1.8
    logits[:, 0] += bias  # the majority pull a model trained on skewed data shows
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return targets, probs, np.arange(n) % 5


def test_offsets_recover_the_minorities_and_nested_cv_keeps_them() -> None:
    targets, probs, folds = skewed_oof()
    chosen = prior_shift.choose_offsets("f1_macro", "single_label", targets, probs, folds)
    assert chosen["kind"] == "prior_shift", chosen
    assert chosen["nested_cv"] > chosen["argmax_cv"] + 0.05  # the honest gain, not the in-sample one
    assert chosen["offsets"][0] == 0.0 and min(chosen["offsets"][1:]) > 0  # minorities pushed up, class 0 anchored
    shifted = prior_shift.decide(probs, chosen)
    assert np.allclose(shifted.sum(axis=1), 1.0)
    assert f1_macro(targets, shifted) > f1_macro(targets, probs) + 0.03
    # the minorities' recall rises: the decision no longer starves them
    assert np.mean(shifted[targets == 2].argmax(axis=1) == 2) > np.mean(probs[targets == 2].argmax(axis=1) == 2)


def test_offsets_are_kept_exactly_when_nested_cv_improves() -> None:
    """A model with no signal: offsets fitted on all rows always look better in-sample; nested CV refuses them unless
    the held-out folds gain (seed 0: they lose, so argmax stays)."""
    kinds = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        targets, probs = rng.integers(0, 3, 600), rng.dirichlet(np.ones(3), 600)
        chosen = prior_shift.choose_offsets("f1_macro", "single_label", targets, probs, np.arange(600) % 5)
        assert (chosen["kind"] == "prior_shift") == (chosen["nested_cv"] > chosen["argmax_cv"]), chosen
        kinds.append(chosen["kind"])
        if chosen["kind"] == "none":
            assert "nested" in chosen["note"] and np.array_equal(prior_shift.decide(probs, chosen), probs)
    assert kinds[0] == "none"


def test_the_fast_scorer_is_sklearns_metric() -> None:
    """The search scores decisions from a confusion matrix; it must equal sklearn's macro-F1 / balanced accuracy,
    absent and never-predicted classes included."""
    from pipeline.core.metrics import METRICS

    rng = np.random.default_rng(0)
    for metric in ("f1_macro", "balanced_accuracy"):
        for _ in range(100):
            n_classes, n = int(rng.integers(2, 6)), int(rng.integers(3, 40))
            targets, probs = rng.integers(0, n_classes, n), rng.dirichlet(np.ones(n_classes), n)
            offsets = rng.normal(0, 1, n_classes)
            expected = METRICS[metric].fn(targets, prior_shift.shift(probs, offsets))
            assert prior_shift._score(metric, targets, probs, offsets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("metric", "task"), [("accuracy", "single_label"), ("log_loss", "single_label"),
                                              ("f1_micro", "single_label"), ("f1_macro", "multi_label")])  # fmt: skip
def test_offsets_only_for_single_label_metrics_that_weight_classes_equally(metric: str, task: str) -> None:
    targets, probs, folds = skewed_oof()
    assert prior_shift.choose_offsets(metric, task, targets, probs, folds) == {"kind": "none"}


def test_which_metrics_weight_classes_equally() -> None:
    assert all(map(weights_classes_equally, ["f1_macro", "balanced_accuracy", "matthews_corrcoef",
                                             "quadratic_weighted_kappa", "fbeta_macro@2"]))  # fmt: skip
    assert not any(map(weights_classes_equally, ["accuracy", "f1_micro", "log_loss", "roc_auc", "map@5"]))


def test_folds_average_in_the_decisions_space() -> None:
    """With offsets, averaging the folds then shifting equals shifting each fold then averaging (log space); without,
    the blend stays today's plain mean of probabilities."""
    rng = np.random.default_rng(1)
    tables = [rng.dirichlet(np.ones(4), 50) for _ in range(3)]
    decision = {"kind": "prior_shift", "offsets": [0.0, 1.0, -0.5, 2.0]}
    blended = prior_shift.average_folds(tables, decision)
    each = prior_shift.average_folds([prior_shift.shift(t, decision["offsets"]) for t in tables], decision)
    assert np.allclose(prior_shift.shift(blended, decision["offsets"]), each)
    assert np.allclose(prior_shift.average_folds(tables, {"kind": "none"}), np.mean(tables, axis=0))


def test_shift_table_changes_the_submissions_argmax() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "x": [0.6, 0.9], "y": [0.4, 0.1]})
    shifted = prior_shift.shift_table(frame, ["x", "y"], {"kind": "prior_shift", "offsets": [0.0, 1.0]})
    assert list(shifted[["x", "y"]].to_numpy().argmax(axis=1)) == [1, 0]
    assert prior_shift.shift_table(frame, ["x", "y"], {"kind": "none"}) is frame


def test_ensemble_worse_than_its_mean_fold_is_flagged() -> None:
    targets, probs, folds = skewed_oof(n=500)
    truth = targets[:200]
    good = [probs[:200]] * 3
    drifted = probs[:200].copy()
    drifted[:, 0] += 5.0  # a blend that drifted to the majority
    check = ensemble_vs_folds("f1_macro", targets, probs, folds, None, (truth, good, drifted / drifted.sum(1)[:, None]))
    assert check["worse"] and check["holdout"]["gain"] < 0
    fine = ensemble_vs_folds("f1_macro", targets, probs, folds, None, (truth, good, probs[:200]))
    assert not fine["worse"] and fine["holdout"]["gain"] == 0
    assert len(fine["oof"]["folds"]) == 5
