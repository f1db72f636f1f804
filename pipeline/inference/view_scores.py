"""TTA view scores: what each view of tta.views adds, measured on the out-of-fold rows.

Free by default: train writes fold<k>/oof_plain.csv (final weights, identity view) and predict writes
fold<k>/oof.csv (the views in use averaged), so the gain of the whole TTA blend over no TTA needs no
model. The gain of each single view needs the OOF probabilities of every view alone: `compute_view_oof`
runs each fold's model once over its validation rows with predict's own pipeline.inference.fold_model.predict_table
(by_view) and writes fold<k>/oof_by_view.csv (id, view, one column per class) and fold<k>/oof_by_view.json
(training fingerprint, views, images, seconds: the planner reads the measured prediction speed from it).
That costs about one more OOF pass per view, so report runs it only when asked (`make report TTA=1`; TTA=all
tries every view pipeline.inference.tta knows); later reports reuse the files. Under tta.views auto predict
already wrote them for the candidate views. A seed bag's fold files hold the mean of its members' (per view).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd
import torch

from pipeline.core import artifacts, paths
from pipeline.core.bag import member_config, members
from pipeline.core.config import Config, training_fingerprint
from pipeline.core.metrics import goodness, score
from pipeline.data.tables import read_csv
from pipeline.inference.fold_model import load_fold_model, predict_table
from pipeline.inference.predictions import mean_of_members
from pipeline.inference.tta import AUTO_CANDIDATES, VIEWS, views_or_identity
from pipeline.inference.tta_auto import effective_views
from pipeline.training.fold import read_folds
from pipeline.training.model import resolve_device

log = logging.getLogger(__name__)


def views_to_measure(cfg: Config, which: str) -> list[str]:
    """`configured`: identity + the views in use (under auto: every candidate); `all`: every view
    pipeline.inference.tta knows."""
    if which == "all":
        return list(VIEWS)
    return list(dict.fromkeys(["identity", *effective_views(cfg, before_choice=list(AUTO_CANDIDATES))]))


def _stamp(out: paths.Paths, fold: int) -> dict | None:
    path = out.oof_by_view_stamp(fold)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cached_views(cfg: Config, fold: int, seed: int | None = None) -> list[str]:
    """Views whose OOF probabilities fold<k>/oof_by_view.csv holds for the current weights ([] if none); `seed`: a
    seed bag member's (fold<k>/seed<s>/, cfg being its member config)."""
    stamp = _stamp(paths.for_config(cfg).member(seed), fold)
    if not stamp or stamp.get("fingerprint") != training_fingerprint(cfg):
        return []
    return list(stamp.get("views", []))


def read_view_oof(cfg: Config, folds: pd.DataFrame) -> dict[str, np.ndarray] | None:
    """view -> (n, C) OOF probabilities in folds.csv row order, when every fold has them; else None."""
    out = paths.for_config(cfg)
    common: list[str] | None = None
    frames = []
    for fold in range(cfg.folds.n_folds):
        views = cached_views(cfg, fold)
        if not views or not out.oof_by_view(fold).exists():
            return None
        common = [v for v in (common if common is not None else views) if v in views]
        frames.append(read_csv(out.oof_by_view(fold), "per-view OOF probabilities"))
    long = pd.concat(frames, ignore_index=True)
    result = {}
    for view in common or []:
        part = long[long["view"] == view].set_index("id")
        if not folds["id"].isin(part.index).all():
            return None
        result[view] = part.loc[folds["id"], cfg.data.classes].astype(float).to_numpy()
    return result or None


def write_view_oof(cfg: Config, fold: int, frame: pd.DataFrame, views: list[str], seconds: float,
                   device: torch.device, seed: int | None = None) -> None:  # fmt: skip
    """fold<k>/oof_by_view.csv (predict_table's by-view table), then its stamp: what it holds and how fast it came;
    `seed`: a seed bag member's (fold<k>/seed<s>/)."""
    out = paths.for_config(cfg).member(seed)
    artifacts.write_csv(out.oof_by_view(fold), frame)
    stamp = {"fingerprint": training_fingerprint(cfg), "views": views, "images": len(frame) // len(views),
             "seconds": round(seconds, 3), "device": str(device)}  # fmt: skip
    artifacts.write_json(out.oof_by_view_stamp(fold), stamp)
    log.info("fold %d: OOF of %d views x %d images in %.1f s", fold, len(views), stamp["images"], seconds)


def compute_view_oof(cfg: Config, views: list[str]) -> None:
    """Write fold<k>/oof_by_view.csv and .json for every fold that lacks one of `views` for its current weights
    (every view measured before is kept, so predict's candidates under tta.views auto stay)."""
    out = paths.for_config(cfg)
    folds = read_folds(out)
    device = resolve_device(cfg.device)
    for fold in range(cfg.folds.n_folds):
        cached = cached_views(cfg, fold)
        if set(views) <= set(cached):
            continue
        wanted = list(dict.fromkeys([*cached, *views]))
        started, frames = time.perf_counter(), []
        for seed in members(cfg):  # a seed bag: its members' views, averaged like predict averages them
            member = member_config(cfg, seed)
            model, dcfg = load_fold_model(member, fold, device, seed)
            frames.append(
                predict_table(model, member, dcfg, folds[folds["fold"] == fold], device, wanted, by_view=True)
            )
        frame = mean_of_members(frames, cfg.data.classes, f"fold {fold} per-view OOF")
        write_view_oof(cfg, fold, frame, wanted, time.perf_counter() - started, device)


def _gain(value: float, base: float, metric: str) -> float:
    """Positive = better, whichever way the metric points."""
    return goodness(metric, value) - goodness(metric, base)


def view_gains(targets: np.ndarray, by_view: dict[str, np.ndarray], configured: list[str], metric: str) -> pd.DataFrame:
    """One row per view alone and one for the configured blend: score, gain over identity, gain of keeping it.

    `gain_in_blend` is score(blend) - score(blend without this view), oriented so positive = the view helps;
    it is empty for views outside tta.views and when the blend has a single view.
    """
    configured = [v for v in views_or_identity(configured) if v in by_view]
    alone = {view: score(metric, targets, probs) for view, probs in by_view.items()}
    base = alone.get("identity", np.nan)
    blend = score(metric, targets, np.mean([by_view[v] for v in configured], axis=0)) if configured else np.nan
    rows = []
    for view, value in alone.items():
        keep_gain = np.nan
        if view in configured and len(configured) > 1:
            rest = np.mean([by_view[v] for v in configured if v != view], axis=0)
            keep_gain = _gain(blend, score(metric, targets, rest), metric)
        rows.append({"view": view, "in_tta": view in configured, "score": value,
                     "gain_vs_identity": _gain(value, base, metric), "gain_in_blend": keep_gain})  # fmt: skip
    rows.append({"view": "blend: " + "+".join(configured), "in_tta": True, "score": blend,
                 "gain_vs_identity": _gain(blend, base, metric), "gain_in_blend": np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def blend_gain(
    targets: np.ndarray, plain: np.ndarray, blended: np.ndarray, views: list[str], metric: str
) -> pd.DataFrame:
    """Without per-view OOF: identity alone (train's oof_plain.csv) against the TTA blend (oof.csv)."""
    base, value = score(metric, targets, plain), score(metric, targets, blended)
    rows = [
        {"view": "identity", "in_tta": "identity" in views_or_identity(views), "score": base, "gain_vs_identity": 0.0},
        {"view": "blend: " + "+".join(views_or_identity(views)), "in_tta": True, "score": value,
         "gain_vs_identity": _gain(value, base, metric)},
    ]  # fmt: skip
    return pd.DataFrame(rows).assign(gain_in_blend=np.nan)


def read_plain_oof(cfg: Config, folds: pd.DataFrame) -> np.ndarray | None:
    """Train's no-TTA OOF probabilities (fold<k>/oof_plain.csv) in folds.csv order, or None if any is missing."""
    out = paths.for_config(cfg)
    frames = []
    for fold in range(cfg.folds.n_folds):
        plain = [out.member(seed).oof_plain(fold) for seed in members(cfg)]  # a seed bag: its members' mean
        if not all(path.exists() for path in plain):
            return None
        parts = [
            read_csv(path, "no-TTA OOF probabilities").astype({c: float for c in cfg.data.classes}) for path in plain
        ]
        frames.append(mean_of_members(parts, cfg.data.classes, f"fold {fold} no-TTA OOF"))
    table = pd.concat(frames).set_index("id")
    if not folds["id"].isin(table.index).all():
        return None
    return table.loc[folds["id"], cfg.data.classes].astype(float).to_numpy()
