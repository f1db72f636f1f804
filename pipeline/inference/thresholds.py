"""Decisions fitted on OOF rows: per-label thresholds (multi-label) and ordinal cut points applied to the expected
class (sum_k k * p_k), by coordinate search on the competition metric; per-class logit offsets (single-label) are
fitted by pipeline.inference.prior_shift and applied here too. Applied identically by predict, ensemble,
blends and the Kaggle Kernel (`hard_probs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.metrics import METRICS, is_better, uses_thresholds


def expected_class(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def ordinal_classes(probs: np.ndarray, cut_points: list[float]) -> np.ndarray:
    return np.digitize(expected_class(probs), cut_points)


def shift(probs: np.ndarray, offsets: np.ndarray | list[float]) -> np.ndarray:
    """softmax(log p + offsets): the probabilities per-class logit offsets (a prior shift) decide on; rows sum to 1."""
    logits = np.log(np.clip(probs, 1e-12, None)) + np.asarray(offsets, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def hard_probs(probs: np.ndarray, thresholds: dict[str, Any] | None) -> np.ndarray:
    """Probabilities turned into the decisions thresholds.json makes (for scoring with any metric): 0/1 rows for
    thresholds and cut points, the shifted probabilities for per-class offsets (pipeline.inference.prior_shift)."""
    if not thresholds or thresholds.get("kind") == "none":
        return probs
    if thresholds["kind"] == "prior_shift":
        return shift(probs, thresholds["offsets"])
    if thresholds["kind"] == "multi_label":
        return (probs >= np.asarray(thresholds["thresholds"])).astype(np.float64)
    return np.eye(probs.shape[1])[ordinal_classes(probs, thresholds["cut_points"])]


def _score(metric: str, targets: np.ndarray, probs: np.ndarray, thresholds: dict[str, Any]) -> float:
    return METRICS[metric].fn(targets, hard_probs(probs, thresholds))


def fit_thresholds(task: str, metric: str, targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Coordinate search on the competition metric over all OOF rows, starting from 0.5 / argmax-like cuts.

    multi_label: one threshold per label; ordinal: C-1 increasing cut points on the expected class.
    Returns {"kind": "none"} where thresholds don't apply (single-label, or a threshold-free metric).
    """
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    if task == "multi_label" and uses_thresholds(metric):
        found: dict[str, Any] = {"kind": "multi_label", "thresholds": [0.5] * probs.shape[1]}
        for _ in range(2):
            for j in range(probs.shape[1]):
                best = _score(metric, targets, probs, found)
                for t in grid:
                    trial = {**found, "thresholds": [*found["thresholds"][:j], float(t), *found["thresholds"][j + 1 :]]}
                    value = _score(metric, targets, probs, trial)
                    if is_better(metric, value, best):
                        found, best = trial, value
        return found
    if task == "ordinal" and uses_thresholds(metric) and probs.shape[1] > 1:
        found = {"kind": "ordinal", "cut_points": [k + 0.5 for k in range(probs.shape[1] - 1)]}
        for _ in range(3):
            for j in range(len(found["cut_points"])):
                cuts = found["cut_points"]
                low = cuts[j - 1] if j else cuts[j] - 1.0
                high = cuts[j + 1] if j + 1 < len(cuts) else cuts[j] + 1.0
                best = _score(metric, targets, probs, found)
                for c in np.linspace(low, high, 22)[1:-1]:
                    trial = {**found, "cut_points": [*cuts[:j], round(float(c), 4), *cuts[j + 1 :]]}
                    value = _score(metric, targets, probs, trial)
                    if is_better(metric, value, best):
                        found, best = trial, value
        return found
    return {"kind": "none"}
