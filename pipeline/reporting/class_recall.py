"""Per-class recall of the folds and of the ensemble, under the experiment's decision (report's numbers, no plots).

Reads data/runs/<comp>/<exp>/thresholds.json (a prior shift decides the argmax: pipeline.inference.prior_shift), and,
when the competition has held-out labels (data.holdout), each fold's test.csv and the blend test.csv. Takes the OOF
rows report already read. Returns a table, one row per class: its share of the training rows, its recall in each
fold's OOF rows, over all OOF rows, and on the held-out rows for the mean fold and the ensemble: a class that the
folds find but the ensemble loses (averaging drifting to the majority) shows up here. Single-label only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.artifacts import read_json
from pipeline.core.config import Config
from pipeline.inference.fold_check import holdout_targets
from pipeline.inference.predictions import read_probs
from pipeline.inference.prior_shift import decide


def recalls(targets: np.ndarray, decided: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) share of each class's rows predicted as that class; NaN for a class with no rows."""
    from sklearn.metrics import recall_score

    return recall_score(targets, decided.argmax(axis=1), labels=range(n_classes), average=None, zero_division=np.nan)


def recall_table(cfg: Config, folds: pd.DataFrame, targets: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    out, classes = paths.for_config(cfg), cfg.data.classes
    thresholds = read_json(out.thresholds) if out.thresholds.exists() else None
    decided, fold_of_row = decide(probs, thresholds), folds["fold"].to_numpy()
    table = pd.DataFrame({"class": classes, "share": np.bincount(targets, minlength=len(classes)) / len(targets)})
    for k in np.unique(fold_of_row):
        inside = fold_of_row == k
        table[f"fold{k}"] = recalls(targets[inside], decided[inside], len(classes))
    table["all OOF"] = recalls(targets, decided, len(classes))
    fold_tests = [out.test_probs(int(k)) for k in np.unique(fold_of_row)]
    if cfg.data.holdout and out.test_blend.exists() and all(p.exists() for p in fold_tests):
        blend = read_probs(out.test_blend, classes)
        truth = holdout_targets(cfg, blend["id"])
        per_fold = [recalls(truth, decide(read_probs(p, classes)[classes].to_numpy(), thresholds), len(classes))
                    for p in fold_tests]  # fmt: skip
        table["held-out mean fold"] = np.mean(per_fold, axis=0)
        table["held-out ensemble"] = recalls(truth, decide(blend[classes].to_numpy(), thresholds), len(classes))
    return table
