"""What the out-of-fold predictions say: confusion counts, per-row losses, most-confused pairs (numbers only).

Every function takes `targets` as pipeline.data.tables.encode_targets returns them (class indices (n,), or a 0/1
matrix (n, C) for multi-label) and `probs` (n, C); nothing here reads files or draws. pipeline.reporting.plots draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MULTI_LABEL_COUNTS = ("TP", "FP", "FN", "TN")
COLUMNS = ["id", "image", "fold", "true", "predicted", "probability_of", "probability", "loss"]
EPS = 1e-7


def confusion_counts(targets: np.ndarray, probs: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Single-label/ordinal: (C, C) counts, rows = true class, columns = predicted (argmax); sums to n.

    Multi-label: (C, 4) per-label counts TP, FP, FN, TN at `threshold`; each row sums to n.
    """
    n_classes = probs.shape[1]
    if task == "multi_label":
        truth = targets.astype(bool)
        pred = probs >= threshold
        return np.stack(
            [(truth & pred).sum(0), (~truth & pred).sum(0), (truth & ~pred).sum(0), (~truth & ~pred).sum(0)], axis=1
        ).astype(np.int64)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets.astype(np.int64), probs.argmax(axis=1)), 1)
    return matrix


def row_losses(targets: np.ndarray, probs: np.ndarray, task: str) -> np.ndarray:
    """Per-row loss: -log p(true class); for multi-label the mean binary cross-entropy over labels."""
    if task == "multi_label":
        p = np.clip(probs, EPS, 1 - EPS)
        return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1)
    p = probs[np.arange(len(targets)), targets.astype(np.int64)]
    return -np.log(np.clip(p, EPS, 1.0))


def label_names(row: np.ndarray, classes: list[str], separator: str = " ") -> str:
    return separator.join(c for c, on in zip(classes, row, strict=True) if on) or "(none)"


def top_losses(
    table: pd.DataFrame, targets: np.ndarray, probs: np.ndarray, classes: list[str], task: str, n: int = 16,
    threshold: float = 0.5,
) -> pd.DataFrame:  # fmt: skip
    """The `n` rows the model got most wrong, worst first (COLUMNS).

    `probability` is that of the predicted class; for multi-label, of the label the row is most wrong about
    (`probability_of` names it).
    """
    losses = row_losses(targets, probs, task)
    order = np.argsort(-losses, kind="stable")[:n]
    rows = []
    for i in order:
        if task == "multi_label":
            predicted = label_names(probs[i] >= threshold, classes)
            true = label_names(targets[i] > 0.5, classes)
            wrong = np.flatnonzero((probs[i] >= threshold) != (targets[i] > 0.5))
            worst = wrong[np.argmax(np.abs(probs[i][wrong] - targets[i][wrong]))] if len(wrong) else probs[i].argmax()
            about, probability = classes[int(worst)], float(probs[i][worst])  # the label it was most wrong about
        else:
            k = int(probs[i].argmax())
            predicted, true, probability = classes[k], classes[int(targets[i])], float(probs[i][k])
            about = predicted
        rows.append(
            {
                "id": table["id"].iloc[i],
                "image": table["image"].iloc[i] if "image" in table.columns else "",
                "fold": int(table["fold"].iloc[i]) if "fold" in table.columns else -1,
                "true": true,
                "predicted": predicted,
                "probability_of": about,
                "probability": probability,
                "loss": float(losses[i]),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def most_confused(matrix: np.ndarray, classes: list[str], n: int = 10) -> pd.DataFrame:
    """Off-diagonal cells of a (C, C) confusion matrix, largest first: true, predicted, count, share of true."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows_true, cols_pred = np.nonzero(off)
    counts = off[rows_true, cols_pred]
    order = np.lexsort((cols_pred, rows_true, -counts))[:n]
    support = matrix.sum(axis=1)
    return pd.DataFrame(
        {
            "true": [classes[i] for i in rows_true[order]],
            "predicted": [classes[j] for j in cols_pred[order]],
            "count": counts[order].astype(int),
            "share_of_true": [
                round(float(c) / max(int(support[i]), 1), 3)
                for c, i in zip(counts[order], rows_true[order], strict=True)
            ],
        }
    )


def most_confused_multilabel(
    targets: np.ndarray, probs: np.ndarray, classes: list[str], n: int = 10, threshold: float = 0.5
) -> pd.DataFrame:
    """Pairs (a label that was missed, a label predicted instead) counted over rows where both happen."""
    truth = targets > 0.5
    pred = probs >= threshold
    missed, extra = truth & ~pred, ~truth & pred
    pairs = missed.T.astype(np.int64) @ extra.astype(np.int64)  # (C, C): rows missed label, cols wrong label
    frame = most_confused(pairs, classes, n).rename(columns={"true": "missed", "predicted": "predicted_instead"})
    return frame.drop(columns=["share_of_true"])  # a pair has no single "true" class to share
