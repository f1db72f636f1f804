"""Did the seed bag help? Each seed's own CV beside the bag's, for scores.json (pipeline.inference.ensemble).

Reads each member's fold<k>/seed<s>/oof.csv (under tta.views auto its oof_by_view.csv, meaned over the views the
bag's fold files hold, so a seed alone is scored with the same TTA as the bag) and folds.csv; writes nothing.
A seed's CV is the metric over every OOF row of the blended folds predicted by that seed's members alone: exactly
what a one-seed experiment with train.seed = s would have scored.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.bag import bag_seeds
from pipeline.core.config import Config
from pipeline.core.metrics import goodness, is_better, score
from pipeline.data.tables import encode_targets, read_csv
from pipeline.inference import tta_auto
from pipeline.inference.predictions import read_probs

log = logging.getLogger(__name__)


def member_oof(cfg: Config, fold: int, seed: int) -> pd.DataFrame:
    """Member (fold, seed)'s OOF probabilities with the views the fold files hold."""
    out, classes = paths.for_config(cfg).member(seed), cfg.data.classes
    if cfg.tta.views != "auto":
        return read_probs(out.oof(fold), classes)
    by_view = read_csv(out.oof_by_view(fold), "per-view OOF").astype({c: float for c in classes})
    return tta_auto.mean_of_views(by_view, tta_auto.effective_views(cfg), classes)


def seed_bag_facts(cfg: Config, folds: pd.DataFrame, fold_ids: list[int], bag_cv: float) -> dict[str, Any] | None:
    """{seeds: [{seed, cv, folds}], mean_seed_cv, best_seed_cv, cv (the bag's), gain, helped}; None without a bag.
    `folds`: the folds.csv rows of `fold_ids`, in the order the bag's CV scored them."""
    seeds = bag_seeds(cfg)
    if not seeds:
        return None
    out = paths.for_config(cfg)
    files = [
        getattr(out.member(s), "oof_by_view" if cfg.tta.views == "auto" else "oof")(k) for s in seeds for k in fold_ids
    ]
    missing = [path for path in files if not path.is_file()]
    if missing:  # e.g. in a Kaggle Kernel: the bundle ships each fold's averaged OOF, not its members'
        log.info("ensemble: seed bag %s: no per-seed CV (%s not found)", seeds, missing[0])
        return {"seeds": None, "cv": bag_cv, "note": f"per-seed CV not measured: {missing[0]} not found"}
    targets, classes = encode_targets(folds["label"], cfg.data), cfg.data.classes
    rows = []
    for seed in seeds:
        parts = {k: member_oof(cfg, k, seed) for k in fold_ids}
        oof = pd.concat(parts.values()).set_index("id").loc[folds["id"], classes].to_numpy()
        per_fold = [score(cfg.metric, encode_targets(folds.loc[folds["fold"] == k, "label"], cfg.data),
                          parts[k][classes].to_numpy()) for k in fold_ids]  # fmt: skip
        rows.append({"seed": seed, "cv": score(cfg.metric, targets, oof), "folds": per_fold})
    values = [row["cv"] for row in rows]
    best = max(values, key=lambda value: goodness(cfg.metric, value))
    mean = float(np.mean(values))
    facts = {
        "seeds": rows,
        "mean_seed_cv": mean,
        "best_seed_cv": best,
        "cv": bag_cv,
        "gain": goodness(cfg.metric, bag_cv) - goodness(cfg.metric, mean),  # > 0: the bag beat a seed on average
        "helped": is_better(cfg.metric, bag_cv, mean),
    }
    log.info("ensemble: seed bag of %d seeds %s: CV %s %.4f vs %.4f for one seed on average (%.4f..%.4f): %s",
             len(seeds), seeds, cfg.metric, bag_cv, mean, min(values), max(values),
             "bagging helped" if facts["helped"] else "bagging did not help")  # fmt: skip
    return facts
