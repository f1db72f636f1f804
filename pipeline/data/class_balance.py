"""Class shares of a competition's training labels, and what `init` says and sets when they are skewed.

Reads the train table (pipeline.data.tables.read_train_table) through the DataConfig init inferred; writes nothing.
`class_shares` -> {class: share}; `imbalance_notes` -> the lines init prints: the shares, and, when the largest
class is more than IMBALANCE_RATIO x the smallest, that accuracy favours the majority and which metrics and settings
docs/imbalance.md recommends. `imbalance_recipe` is what init's baseline turns on for such data when the metric
weights classes equally: the arm that won `make bench-imbalance` on held-out macro-F1 (nothing when none won).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import DataConfig
from pipeline.core.errors import UserError
from pipeline.core.metrics import weights_classes_equally
from pipeline.core.schema import FoldsConfig
from pipeline.data.tables import encode_targets, read_train_table

IMBALANCE_RATIO = 5.0  # largest class / smallest class above this: init warns
# `make bench-imbalance` (docs/imbalance.md): the training change that beat the plain baseline on held-out macro-F1,
# merged into baseline.yaml's train section when the metric weights classes equally and the classes are skewed.
# Measured (Fashion-MNIST at 50/20/10/5/4/3/3/2/2/1 %, 5 folds + TTA, 3 epochs): the balanced sampler, macro-F1
# .670 against .325 for the plain baseline with its fitted offsets, .435 class weights, .424 logit-adjusted loss.
# Accuracy-scored competitions never get it: their baseline is unchanged.
WINNER: dict[str, Any] = {"sampler": "balanced"}


def class_shares(data: DataConfig, raw: Path) -> dict[str, float] | None:
    """{class: share of training rows (multi-label: of rows carrying it)}; None when the table can't be read yet
    (the folds stage reports why, naming the file and row)."""
    try:
        table = read_train_table(data, FoldsConfig(), raw)
    except UserError:
        return None
    targets = encode_targets(table["label"], data)
    counts = targets.sum(axis=0) if targets.ndim == 2 else np.bincount(targets, minlength=len(data.classes))
    return {name: float(count) / len(table) for name, count in zip(data.classes, counts, strict=True)}


def imbalance_ratio(shares: dict[str, float]) -> float:
    values = list(shares.values())
    return max(values) / max(min(values), 1e-12)


def imbalance_notes(shares: dict[str, float], metric: str) -> list[str]:
    """What init prints: the class shares (largest first) and, for skewed classes, what the metric will reward."""
    ordered = sorted(shares.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{name} {100 * share:.1f}%" for name, share in ordered[:12])
    lines = [f"class shares: {shown}{', ...' if len(ordered) > 12 else ''}"]
    ratio = imbalance_ratio(shares)
    if ratio <= IMBALANCE_RATIO:
        return lines
    lines.append(f"WARNING: imbalanced classes: the largest ({ordered[0][0]}) is {ratio:.0f}x the smallest "
                 f"({ordered[-1][0]}). Accuracy favours the majority: a model that rarely predicts the small classes "
                 "scores well on it.")  # fmt: skip
    if weights_classes_equally(metric):
        lines.append(f"metric {metric} weights classes equally: ensemble fits per-class logit offsets on OOF (kept "
                     "when nested CV improves); see docs/imbalance.md")  # fmt: skip
    else:
        lines.append(f"metric is {metric}: if the competition scores macro-F1, balanced accuracy, MCC or kappa, set "
                     "`metric:` to it, so ensemble fits per-class offsets and the baseline balances training "
                     "(docs/imbalance.md)")  # fmt: skip
    return lines


def imbalance_recipe(shares: dict[str, float] | None, metric: str, task: str) -> dict[str, Any]:
    """train.* keys for baseline.yaml: the measured winner, only for skewed single-label data scored equally."""
    if not WINNER or shares is None or task != "single_label" or not weights_classes_equally(metric):
        return {}
    return dict(WINNER) if imbalance_ratio(shares) > IMBALANCE_RATIO else {}
