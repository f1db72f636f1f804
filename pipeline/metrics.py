"""Competition metrics by name, computed from probabilities (sklearn wherever it has the metric).

Every metric takes `targets` (int class indices, shape (n,), or a 0/1 matrix (n, C) for multi-label)
and `probs` (n, C) and returns a float. Multi-label predictions are thresholded at `threshold`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


def _is_multilabel(targets: np.ndarray) -> bool:
    return targets.ndim == 2


def _hard(probs: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    return (probs >= threshold).astype(int) if _is_multilabel(targets) else probs.argmax(axis=1)


def accuracy(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.accuracy_score(targets, _hard(probs, targets, threshold)))


def error_rate(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return 1.0 - accuracy(targets, probs, threshold)


def log_loss(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    eps = 1e-7
    if _is_multilabel(targets):  # mean binary cross-entropy over labels
        p = np.clip(probs, eps, 1 - eps)
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    p = np.clip(probs, eps, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(skm.log_loss(targets, p, labels=np.arange(probs.shape[1])))


def f1_macro(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.f1_score(targets, _hard(probs, targets, threshold), average="macro", zero_division=0))


def f1_micro(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.f1_score(targets, _hard(probs, targets, threshold), average="micro", zero_division=0))


def quadratic_weighted_kappa(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.cohen_kappa_score(targets, probs.argmax(axis=1), weights="quadratic"))


def roc_auc(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    if _is_multilabel(targets):  # mean over labels that have both classes present
        present = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
        return float(np.mean([skm.roc_auc_score(targets[:, j], probs[:, j]) for j in present]))
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(targets, probs[:, 1]))
    p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    return float(skm.roc_auc_score(targets, p, multi_class="ovr", labels=np.arange(probs.shape[1])))


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., float]
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "accuracy": Metric(accuracy, True),
    "error_rate": Metric(error_rate, False),
    "log_loss": Metric(log_loss, False),
    "f1_macro": Metric(f1_macro, True),
    "f1_micro": Metric(f1_micro, True),
    "quadratic_weighted_kappa": Metric(quadratic_weighted_kappa, True),
    "roc_auc": Metric(roc_auc, True),
}


def score(name: str, targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    if not np.isfinite(probs).all():  # a diverged model: refuse rather than raise in sklearn or score garbage
        raise ValueError(f"{name}: probabilities hold NaN or infinite values; the model diverged")
    return METRICS[name].fn(targets, probs, threshold)


# One truth for "is a higher score better?": every stage that compares, sorts or picks scores calls these.
def higher_is_better(name: str) -> bool:
    return METRICS[name].higher_is_better


def is_better(name: str, new: float, old: float, margin: float = 0.0) -> bool:
    """True when `new` beats `old` by more than `margin` in the metric's own direction."""
    return new > old + margin if higher_is_better(name) else new < old - margin


def goodness(name: str, value: float) -> float:
    """`value` signed so that larger is always better: a key for max() and sort()."""
    return value if higher_is_better(name) else -value
