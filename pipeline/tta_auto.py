"""`tta.views: auto`: choose, per experiment, the TTA views that improve the OOF score, honestly.

predict (with auto) writes every candidate view's probabilities separately: fold<k>/oof_by_view.csv and
fold<k>/test_by_view.csv (id, view, one column per class). ensemble then chooses the subset by greedy
forward selection from `identity` on the OOF rows, under the same guard as blending: for every fold the
selection is made on the other folds' rows and scored on the held-out fold. When that nested score does not
beat identity alone, no TTA is used. The choice and its gain are recorded in scores.json (`tta_auto`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.metrics import METRICS, score

CANDIDATES = ("identity", "hflip", "vflip", "hvflip")  # cheap flips; tta.candidates may list others


def is_auto(views: list[str] | str) -> bool:
    return views == "auto" or views == ["auto"]


def by_view(frame: pd.DataFrame, classes: list[str], ids: list[str]) -> dict[str, np.ndarray]:
    """{view: probabilities in `ids` order} from an (id, view, classes...) table."""
    out = {}
    for view, part in frame.groupby("view", sort=False):
        out[str(view)] = part.set_index("id").loc[ids, classes].to_numpy(dtype=float)
    return out


def _better(metric: str):  # noqa: ANN202 - (a, b) -> bool
    return (lambda a, b: a > b + 1e-12) if METRICS[metric].higher_is_better else (lambda a, b: a < b - 1e-12)


def select(views: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> list[str]:
    """Greedy forward selection from identity: add the view that most improves the mean's score, while any does."""
    better = _better(metric)
    chosen = ["identity"]
    best = score(metric, targets, views["identity"])
    while True:
        trials = {
            v: score(metric, targets, np.mean([views[c] for c in [*chosen, v]], axis=0))
            for v in views
            if v not in chosen
        }
        if not trials:
            return chosen
        top = max(trials, key=trials.get) if METRICS[metric].higher_is_better else min(trials, key=trials.get)
        if not better(trials[top], best):
            return chosen
        chosen.append(top)
        best = trials[top]


def choose_views(views: dict[str, np.ndarray], targets: np.ndarray, folds: np.ndarray, metric: str) -> dict:
    """The views to use and the honest evidence: nested selection per held-out fold vs identity alone."""
    nested = np.zeros_like(views["identity"])
    per_fold = []
    for k in np.unique(folds):
        held = folds == k
        picked = select({v: p[~held] for v, p in views.items()}, targets[~held], metric)
        nested[held] = np.mean([views[v][held] for v in picked], axis=0)
        per_fold.append(picked)
    nested_score = score(metric, targets, nested)
    identity_score = score(metric, targets, views["identity"])
    guarded = _better(metric)(nested_score, identity_score)
    chosen = select(views, targets, metric) if guarded else ["identity"]
    return {
        "chosen": chosen,
        "nested_cv": nested_score,
        "identity_cv": identity_score,
        "gain": nested_score - identity_score,
        "per_fold_choice": per_fold,
        "candidates": list(views),
        "fell_back_to_identity": not guarded,
    }
