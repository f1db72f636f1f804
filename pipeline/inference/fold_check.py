"""Is the ensemble worse than its own folds? The check ensemble records in scores.json (`ensemble_vs_folds`).

Inputs (arrays): targets and OOF probabilities with each row's fold, the decision (thresholds.json: a prior shift,
thresholds or cut points, or none) and, when the competition has held-out labels (data.holdout), each fold's test
probabilities and their blend. Output: {"oof": {...}, "holdout": {...} or None, "worse": bool}, every score under the
decision, in the competition metric. On OOF the "ensemble" is the pooled CV (every row scored once, by its own fold)
against the mean of the per-fold scores; on held-out rows it is the blend of the folds against the mean fold. An
ensemble below its mean fold on held-out rows means the averaging drifts (to the majority, on skewed classes): the
warning says so. `holdout_targets` reads the held-out labels (data.holdout) for ensemble and report. Writes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import Config
from pipeline.core.metrics import goodness, score
from pipeline.data.tables import encode_targets, read_csv
from pipeline.inference.prior_shift import decide


def holdout_targets(cfg: Config, ids: pd.Series) -> np.ndarray | None:
    """The held-out labels of `ids` when the competition provides them (data.holdout; the demo does), else None."""
    if not cfg.data.holdout:
        return None
    labels = read_csv(paths.raw_dir(cfg.comp) / cfg.data.holdout, "holdout labels")
    truth = labels.set_index(labels.columns[0]).loc[ids, cfg.data.label_column or "label"]
    return encode_targets(truth, cfg.data)


def _compare(metric: str, ensemble: float, folds: list[float]) -> dict[str, Any]:
    mean = float(np.mean(folds))
    return {"ensemble": round(ensemble, 6), "mean_fold": round(mean, 6), "folds": [round(f, 6) for f in folds],
            "gain": round(goodness(metric, ensemble) - goodness(metric, mean), 6)}  # fmt: skip


def ensemble_vs_folds(metric: str, targets: np.ndarray, probs: np.ndarray, fold_of_row: np.ndarray,
                      thresholds: dict[str, Any] | None, holdout: tuple | None = None) -> dict[str, Any]:  # fmt: skip
    """`holdout`: (held-out targets, [each fold's test probabilities], the blended test probabilities) or None."""
    per_fold = [score(metric, targets[fold_of_row == k], decide(probs[fold_of_row == k], thresholds))
                for k in np.unique(fold_of_row)]  # fmt: skip
    facts: dict[str, Any] = {"oof": _compare(metric, score(metric, targets, decide(probs, thresholds)), per_fold),
                             "holdout": None}  # fmt: skip
    if holdout is not None:
        truth, tests, blended = holdout
        folds = [score(metric, truth, decide(test, thresholds)) for test in tests]
        facts["holdout"] = _compare(metric, score(metric, truth, decide(blended, thresholds)), folds)
    judged = facts["holdout"] or facts["oof"]  # held-out rows, where there are any, compare like with like
    facts["worse"] = bool(judged["gain"] < 0)
    return facts
