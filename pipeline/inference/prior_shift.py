"""Per-class logit offsets (a prior shift) fitted to the competition metric on OOF predictions, single-label tasks.

A model trained on skewed classes predicts the majority too often; for metrics that weight classes equally
(macro-F1, balanced accuracy, MCC, kappa, macro F-beta) the decision argmax_c(log p_c + b_c) with per-class offsets b
fitted on OOF rows recovers much of what the minorities lost, without retraining.

- `fit_offsets`: coordinate search on the metric over a grid of offsets (class 0 stays at 0: only differences count).
- `choose_offsets`: fit on all OOF rows, and measure the gain honestly with nested CV (offsets fitted on the other
  folds' rows score each fold's rows); kept only when the nested CV beats argmax. Returns what thresholds.json holds:
  {"kind": "prior_shift", "offsets": [...], ...evidence} or {"kind": "none", ...evidence}.
- `decide`: probabilities -> what the metric scores under thresholds.json's decision (prior shift, or the
  multi-label thresholds / ordinal cut points of pipeline.inference.thresholds.hard_probs): the one function that
  ensemble, submission, blend and the Kaggle Kernel (through those stages) call.
- `shift_table`: a probability table under the prior shift, for the submission formatter (submission, blends).
- `average_folds`: the folds' test probabilities averaged in the decision's space (log space when offsets decide).

Inputs are arrays; nothing here reads or writes files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.metrics import METRICS, goodness, is_better, weights_classes_equally
from pipeline.inference.thresholds import hard_probs, shift

GRID = np.round(np.arange(-3.0, 3.01, 0.25), 2)  # natural-log offsets: up to e^3 = 20x a class's odds
ROUNDS = 2


def decide(probs: np.ndarray, thresholds: dict[str, Any] | None) -> np.ndarray:
    """The probabilities (or 0/1 rows) the metric scores under a thresholds.json decision: the prior shift, the
    multi-label thresholds or the ordinal cut points (pipeline.inference.thresholds.hard_probs applies them all)."""
    return hard_probs(probs, thresholds)


def shift_table(probs: pd.DataFrame, classes: list[str], thresholds: dict[str, Any] | None) -> pd.DataFrame:
    """A probability table (id + one column per class) under a prior shift, for formatting a submission; any other
    decision (thresholds, cut points) is the formatter's own, so the table comes back as it is."""
    if not thresholds or thresholds.get("kind") != "prior_shift":
        return probs
    shifted = probs.copy()
    shifted[classes] = shift(probs[classes].to_numpy(dtype=np.float64), thresholds["offsets"])
    return shifted


def _confusion_score(metric: str, targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> float | None:
    """macro-F1 / balanced accuracy from a confusion matrix, as sklearn computes them (F1 averaged over the classes
    present in targets or predictions, zero_division 0; recall over the classes present in targets): the search
    scores thousands of decisions, and sklearn's per-call overhead would dominate. None for other metrics."""
    if metric not in ("f1_macro", "balanced_accuracy"):
        return None
    confusion = np.bincount(targets * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, -1)
    hits, true, said = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    if metric == "balanced_accuracy":
        present = true > 0
        return float(np.mean(hits[present] / true[present]))
    present = (true + said) > 0
    return float(np.mean(2 * hits[present] / (true + said)[present]))


def _score(metric: str, targets: np.ndarray, probs: np.ndarray, offsets: np.ndarray) -> float:
    logits = np.log(np.clip(probs, 1e-12, None)) + offsets
    fast = _confusion_score(metric, targets, logits.argmax(axis=1), probs.shape[1])
    return METRICS[metric].fn(targets, shift(probs, offsets)) if fast is None else fast


def fit_offsets(metric: str, targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Offsets (C,) maximising `metric` on these rows by coordinate search from 0 (argmax); ties keep the smaller."""
    offsets = np.zeros(probs.shape[1])
    best = _score(metric, targets, probs, offsets)
    for _ in range(ROUNDS):
        improved = False
        for c in range(1, probs.shape[1]):
            for value in sorted(GRID, key=abs):  # nearest to 0 first: a tie never moves an offset further out
                trial = offsets.copy()
                trial[c] = value
                found = _score(metric, targets, probs, trial)
                if is_better(metric, found, best):
                    offsets, best, improved = trial, found, True
        if not improved:
            break
    return offsets


def nested_cv(metric: str, targets: np.ndarray, probs: np.ndarray, folds: np.ndarray) -> float:
    """The metric over all rows when each fold's rows are decided by offsets fitted on the other folds' rows."""
    shifted = np.empty_like(probs, dtype=np.float64)
    for fold in np.unique(folds):
        inside = folds == fold
        offsets = fit_offsets(metric, targets[~inside], probs[~inside])
        shifted[inside] = shift(probs[inside], offsets)
    return METRICS[metric].fn(targets, shifted)


def choose_offsets(metric: str, task: str, targets: np.ndarray, probs: np.ndarray,
                   folds: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Offsets fitted on all OOF rows, kept only when nested CV beats argmax; the evidence either way."""
    if task != "single_label" or not weights_classes_equally(metric):
        return {"kind": "none"}
    if len(np.unique(folds)) < 2:
        return {"kind": "none", "note": "prior shift needs OOF rows of at least 2 folds for its nested CV"}
    argmax_cv = METRICS[metric].fn(targets, probs)
    nested = nested_cv(metric, targets, probs, folds)
    offsets = fit_offsets(metric, targets, probs)
    evidence = {"argmax_cv": round(float(argmax_cv), 6), "nested_cv": round(float(nested), 6),
                "gain": round(float(goodness(metric, nested) - goodness(metric, argmax_cv)), 6)}  # fmt: skip
    if not is_better(metric, nested, argmax_cv) or not np.any(offsets):
        return {"kind": "none", "note": "fitted per-class offsets did not beat argmax in nested CV", **evidence}
    return {"kind": "prior_shift", "offsets": [float(v) for v in offsets], **evidence}


def average_folds(tables: list[np.ndarray], thresholds: dict[str, Any] | None) -> np.ndarray:
    """The folds' (rows, C) probabilities averaged in the space the decision uses: with a prior shift, in log space
    (the offsets add to log-probabilities, so the mean of shifted folds and the shifted mean then agree), else the
    plain mean of probabilities (today's blend, so accuracy and probability metrics are unchanged)."""
    stack = np.stack(tables).astype(np.float64)
    if not thresholds or thresholds.get("kind") != "prior_shift":
        return stack.mean(axis=0)
    mean_log = np.log(np.clip(stack, 1e-12, None)).mean(axis=0)
    return shift(np.exp(mean_log), np.zeros(stack.shape[2]))  # renormalised geometric mean
