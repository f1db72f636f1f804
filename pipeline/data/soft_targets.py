"""Training targets from another run's predictions: pseudo-labelled test rows (train.pseudo) and OOF distillation
(train.soft_labels). Sources are found and checked by pipeline.data.sources.

Reads the source's test.csv / oof.csv, this competition's test listing (data/processed/<comp>/test.csv: id, image)
and the fold's training rows; writes nothing. With either key on, every training row's target is a dense
probability row (n, C), label smoothing already applied, scaled by the row's loss weight (1, or
train.pseudo.weight for pseudo rows): the soft-target losses are linear in the target, so the scale multiplies
that row's loss, and mixup/cutmix mixing two rows mixes their weights too.

- pseudo, hard (soft: false): test rows whose max source probability is at least `threshold`, one-hot on the argmax.
- pseudo, soft (soft: true): every test row, the source's probabilities as its target.
- soft_labels: a training row's target = (1 - alpha) * one-hot(label) + alpha * the source's OOF row. The source's
  OOF of fold k's training rows came from models that saw fold k's validation rows: CV is optimistic by
  construction (CV_NOTE), the holdout is the honest number.
Pseudo rows join the training side only; the validation rows of every fold are untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.data import sources
from pipeline.data.sources import Source
from pipeline.data.tables import encode_targets, read_csv

log = logging.getLogger(__name__)

CV_NOTES = {
    "soft_labels": "optimistic by construction: the distillation source's OOF for each fold's training rows came "
    "from models that saw that fold's validation rows; the holdout (data.holdout) is the honest number",
    "pseudo": "slightly optimistic: the pseudo-label source's test predictions came from models that saw every "
    "training row, each fold's validation rows included; the holdout (data.holdout) is the honest number",
}


def dense_targets_on(cfg: Config) -> bool:
    """Whether training uses dense (soft, weighted) targets: train.pseudo or train.soft_labels is on."""
    return bool(sources.source_keys(cfg))


def source_probs(cfg: Config, source: Source, which: str, ids: pd.Series) -> np.ndarray:
    """The source's probabilities (`which`: oof or test) for `ids`, in that order, each row summing to 1."""
    path = source.oof if which == "oof" else source.test
    frame = read_csv(path, f"{source.name} {which} probabilities")
    classes = cfg.data.classes
    if list(frame.columns[1:]) != list(classes):
        raise UserError(f"train.{source.key}.from: {path} has columns {list(frame.columns[1:])}, not this "
                        f"competition's classes {classes}; use a source of this competition")  # fmt: skip
    frame = frame.astype({"id": str}).set_index("id")
    missing = pd.Index(ids.astype(str)).difference(frame.index)
    if len(missing):
        raise UserError(f"train.{source.key}.from: {path} has no row for id {missing[0]!r} ({len(missing)} missing); "
                        "re-run the source's ensemble on these folds and test set")  # fmt: skip
    probs = frame.loc[ids.astype(str), classes].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise UserError(f"train.{source.key}.from: {path} holds probabilities that are not finite or negative")
    return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)


def pseudo_rows(cfg: Config) -> tuple[pd.DataFrame, np.ndarray]:
    """(test rows that join training: id, image; their targets (n, C) before smoothing and weighting)."""
    p = cfg.train.pseudo
    source = sources.resolve(cfg, "pseudo")
    test = read_csv(paths.for_config(cfg).test_csv, "test listing")
    probs = source_probs(cfg, source, "test", test["id"])
    if p.soft:
        return test[["id", "image"]].reset_index(drop=True), probs
    keep = probs.max(axis=1) >= p.threshold
    hard = np.eye(len(cfg.data.classes))[probs[keep].argmax(axis=1)]
    return test.loc[keep, ["id", "image"]].reset_index(drop=True), hard


@dataclass
class TrainingSet:
    """One fold's training side with dense targets: images, targets (n, C), hard classes (n,), pseudo row count."""

    images: list[str]
    targets: np.ndarray
    classes: np.ndarray  # labels, then the pseudo rows' argmax: the balanced sampler and class weights count these
    pseudo_rows: int


def distilled(cfg: Config, train_rows: pd.DataFrame) -> np.ndarray:
    """The training rows' targets: one-hot labels, mixed with the distillation source's OOF when that is on."""
    one_hot = np.eye(len(cfg.data.classes))[encode_targets(train_rows["label"], cfg.data)]
    if not cfg.train.soft_labels.from_:
        return one_hot
    alpha = cfg.train.soft_labels.alpha
    oof = source_probs(cfg, sources.resolve(cfg, "soft_labels"), "oof", train_rows["id"])
    return (1 - alpha) * one_hot + alpha * oof


def training_set(cfg: Config, train_rows: pd.DataFrame) -> TrainingSet:
    """The fold's training rows (distilled when on) plus the pseudo rows (when on), smoothed and weighted."""
    targets, images = distilled(cfg, train_rows), list(train_rows["image"])
    classes = encode_targets(train_rows["label"], cfg.data)
    weights = np.ones(len(targets))
    extra = 0
    if cfg.train.pseudo.from_:
        rows, pseudo_targets = pseudo_rows(cfg)
        extra = len(rows)
        images += list(rows["image"])
        targets = np.concatenate([targets, pseudo_targets])
        classes = np.concatenate([classes, pseudo_targets.argmax(axis=1)])
        weights = np.concatenate([weights, np.full(extra, cfg.train.pseudo.weight)])
    smoothing, n_classes = cfg.train.label_smoothing, len(cfg.data.classes)
    smoothed = targets * (1 - smoothing) + smoothing / n_classes
    return TrainingSet(images, (smoothed * weights[:, None]).astype(np.float32), classes.astype(np.int64), extra)


def scores_facts(cfg: Config) -> dict[str, Any]:
    """What ensemble's scores.json records: `pseudo`, `soft_labels` (source and settings) and `cv_note`."""
    facts: dict[str, Any] = {}
    identities = sources.source_identities(cfg)
    if cfg.train.pseudo.from_:
        p = cfg.train.pseudo
        facts["pseudo"] = {"source": identities["pseudo"], "rows": len(pseudo_rows(cfg)[0]), "threshold": p.threshold,
                           "soft": p.soft, "weight": p.weight}  # fmt: skip
    if cfg.train.soft_labels.from_:
        facts["soft_labels"] = {"source": identities["soft_labels"], "alpha": cfg.train.soft_labels.alpha}
    notes = [CV_NOTES[key] for key in ("soft_labels", "pseudo") if key in facts]
    if notes:
        facts["cv_note"] = "CV is " + "; also ".join(notes)
    return facts
