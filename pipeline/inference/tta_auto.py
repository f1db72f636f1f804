"""`tta.views: auto`: choose, per experiment, the TTA views that improve the OOF score, honestly.

predict (with auto) writes every candidate view's probabilities separately: fold<k>/oof_by_view.csv and
fold<k>/test_by_view.csv (id, view, one column per class). ensemble then chooses the subset by greedy
forward selection from `identity` on the OOF rows, under the same guard as blending: for every fold the
selection is made on the other folds' rows and scored on the held-out fold. When that nested score does not
beat identity alone, no TTA is used. The choice and its gain are recorded in scores.json (`tta_auto`); ensemble
rewrites every fold's oof.csv/test.csv with the chosen views, then records them in tta_views.json.
`effective_views` is the one answer to "which views do the predictions hold" for every stage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import artifacts, paths
from pipeline.core.config import Config, training_fingerprint
from pipeline.core.errors import UserError
from pipeline.core.metrics import goodness, is_better, score
from pipeline.inference.tta import AUTO_CANDIDATES, views_or_identity

MARGIN = 1e-12  # a view must beat the current blend by more than rounding noise


def effective_views(cfg: Config, before_choice: list[str] | None = None) -> list[str]:
    """The TTA views the fold files (fold<k>/oof.csv, test.csv) hold: tta.views, or under `auto` the views ensemble
    chose for the current weights (run/tta_views.json). Before that choice, `before_choice` if given, else an error:
    every stage that reads or ships predictions asks here, so OOF, test, report, planner and kernel agree."""
    if cfg.tta.views != "auto":
        return views_or_identity(cfg.tta.views)
    choice = read_choice(cfg)
    if choice is not None:
        return choice
    if before_choice is not None:
        return before_choice
    out = paths.for_config(cfg)
    raise UserError(f"tta.views: auto has not chosen views for these weights yet ({out.tta_choice} missing or "
                    "older); run `make ensemble CONFIG=...` first")  # fmt: skip


def read_choice(cfg: Config) -> list[str] | None:
    """The views ensemble chose under `auto` for the current training fingerprint, or None."""
    path = paths.for_config(cfg).tta_choice
    if not path.exists():
        return None
    recorded = artifacts.read_json(path)
    if recorded.get("fingerprint") != training_fingerprint(cfg):
        return None
    return list(recorded["views"])


def write_choice(cfg: Config, views: list[str]) -> None:
    artifacts.write_json(paths.for_config(cfg).tta_choice,
                         {"fingerprint": training_fingerprint(cfg), "views": views})  # fmt: skip


def candidates(available: list[str]) -> list[str]:
    """The views `auto` chooses among: the candidates, whatever else a report measured beside them."""
    return [view for view in AUTO_CANDIDATES if view in available]


def mean_of_views(frame: pd.DataFrame, views: list[str], classes: list[str]) -> pd.DataFrame:
    """id + the mean probabilities of `views` from an (id, view, classes...) table, ids in first-seen order."""
    chosen = frame[frame["view"].isin(views)]
    missing = sorted(set(views) - set(chosen["view"]))
    if missing:
        raise UserError(f"per-view probabilities lack view(s) {missing}; re-run predict")
    return chosen.groupby("id", sort=False)[classes].mean().reset_index()


def by_view(frame: pd.DataFrame, classes: list[str], ids: list[str]) -> dict[str, np.ndarray]:
    """{view: probabilities in `ids` order} from an (id, view, classes...) table."""
    out = {}
    for view, part in frame.groupby("view", sort=False):
        out[str(view)] = part.set_index("id").loc[ids, classes].to_numpy(dtype=float)
    return out


def select(views: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> list[str]:
    """Greedy forward selection from identity: add the view that most improves the mean's score, while any does."""
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
        top = max(trials, key=lambda v: goodness(metric, trials[v]))
        if not is_better(metric, trials[top], best, MARGIN):
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
    guarded = is_better(metric, nested_score, identity_score, MARGIN)
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
