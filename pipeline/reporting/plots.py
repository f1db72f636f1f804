"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function returns a Figure; pipeline.core.artifacts.save_figure writes it. Sizes and font sizes scale with
the number of classes or folds so a 120-class confusion matrix stays readable.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.reporting.interpret import MULTI_LABEL_COUNTS


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _label_size(n: int, inches: float) -> float:
    """A font size (points) that fits `n` labels along `inches`: 40 % of the room each label gets."""
    return max(4.0, min(10.0, 0.4 * inches * 72 / max(n, 1)))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def learning_curves(logs: dict[int, pd.DataFrame], metric: str) -> Figure:
    """Train loss, validation metric and learning rate per epoch, one line per fold."""
    figure = _figure(14, 4)
    axes = figure.subplots(1, 3)
    panels = [("train_loss", "train loss"), (f"valid_{metric}", f"validation {metric}"), ("lr", "learning rate")]
    for ax, (column, title) in zip(axes, panels, strict=True):
        for fold, log in sorted(logs.items()):
            if column in log.columns:
                ax.plot(log["epoch"], log[column], marker="o", markersize=4, label=f"fold {fold}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        epochs = max((int(log["epoch"].max()) for log in logs.values() if len(log)), default=1)
        ax.set_xticks(range(1, epochs + 1, max(1, math.ceil(epochs / 12))))
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if logs:
        axes[1].legend(fontsize=8)
    return figure


def confusion(matrix: np.ndarray, classes: list[str], task: str) -> Figure:
    """Single-label: counts, coloured by share of the true class. Multi-label: TP/FP/FN/TN per label."""
    n = len(classes)
    multi = task == "multi_label"
    columns = list(MULTI_LABEL_COUNTS) if multi else classes
    share = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    side = min(max(5.0, 0.42 * n + 2.5), 30.0)
    figure = _figure(6.5 if multi else side + 1.2, side if not multi else max(3.0, 0.35 * n + 1.5))
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto" if multi else "equal")
    size = _label_size(n, side)
    ax.set_xticks(range(len(columns)), columns, fontsize=size if not multi else 9, rotation=0 if multi else 90)
    ax.set_yticks(range(n), classes, fontsize=size)
    ax.set_ylabel("label" if multi else "true class")
    ax.set_xlabel("" if multi else "predicted class")
    ax.set_title(f"OOF confusion ({int(matrix.sum()) if not multi else int(matrix[0].sum())} rows)")
    if n <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=max(size - 1, 5), color=colour)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of row")
    return figure


def top_losses(rows: pd.DataFrame, images: list[np.ndarray | None], columns: int = 4) -> Figure:
    """A grid of the worst OOF rows: image, true -> predicted, its probability, loss and id."""
    count = max(len(rows), 1)
    columns = min(columns, count)
    lines = math.ceil(count / columns)
    figure = _figure(3.2 * columns, 3.6 * lines)
    axes = np.atleast_1d(figure.subplots(lines, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (_, row), image in zip(axes, rows.iterrows(), images, strict=False):
        if image is not None:
            ax.imshow(image)
        else:
            ax.text(0.5, 0.5, "image not found", ha="center", va="center", transform=ax.transAxes)
        p = f"p={row['probability']:.2f}" if row["probability_of"] == row["predicted"] else \
            f"p({row['probability_of']})={row['probability']:.2f}"  # fmt: skip
        title = f"true: {row['true']}\npred: {row['predicted']} ({p})\nloss {row['loss']:.2f}  {row['id']}"
        ax.set_title(title, fontsize=8, loc="left")
    return figure


def tta_views(gains: pd.DataFrame, metric: str) -> Figure:
    """OOF score of each view alone and of the configured blend; the identity score as a reference line."""
    figure = _figure(7, max(2.5, 0.45 * len(gains) + 1.2))
    ax = figure.subplots()
    scores = gains["score"].to_numpy(dtype=float)
    colours = ["tab:orange" if v.startswith("blend") else "tab:blue" if t else "tab:gray"
               for v, t in zip(gains["view"], gains["in_tta"], strict=True)]  # fmt: skip
    positions = np.arange(len(gains))[::-1]
    ax.barh(positions, scores, color=colours)
    ax.set_yticks(positions, list(gains["view"]), fontsize=9)
    finite = scores[np.isfinite(scores)]
    if len(finite):
        low, high = float(finite.min()), float(finite.max())
        pad = max((high - low) * 0.15, abs(high) * 0.01, 1e-3)  # zoomed in: views often differ in the 3rd decimal
        ax.set_xlim(max(low - pad, 0.0) if low >= 0 else low - pad, high + pad)
    for y, value in zip(positions, scores, strict=True):
        if np.isfinite(value):
            ax.text(value, y, f" {value:.4f}", va="center", fontsize=8)
    identity = gains.loc[gains["view"] == "identity", "score"]
    if len(identity):
        ax.axvline(float(identity.iloc[0]), color="black", linestyle="--", linewidth=1, label="identity (no TTA)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel(f"OOF {metric}")
    ax.set_title("TTA views on the OOF rows (blue: in tta.views, grey: not, orange: the configured blend)", fontsize=10)
    return figure


def time_plan(plans: pd.DataFrame, limit_s: float, margin: float) -> Figure:
    """Estimated hours per scenario, stacked by part, against the kernel's limit and its usable share."""
    figure = _figure(9, max(2.2, 0.8 * len(plans) + 1.2))
    ax = figure.subplots()
    parts = [c for c in ("train", "validate", "predict_oof", "predict_test") if c in plans.columns]
    positions = np.arange(len(plans))[::-1]
    left = np.zeros(len(plans))
    for part in parts:
        hours = plans[part].to_numpy(dtype=float) / 3600
        ax.barh(positions, hours, left=left, label=part.replace("_", " "))
        left += hours
    limit_h = limit_s / 3600
    ax.axvline(limit_h, color="red", linewidth=1.5, label=f"limit {limit_h:g} h")
    ax.axvline(
        limit_h * (1 - margin), color="red", linestyle="--", linewidth=1, label=f"usable ({100 - 100 * margin:.0f}%)"
    )
    right = max(limit_h, float(left.max()) if len(left) else 0.0) * 1.35
    ax.set_xlim(0, right)
    for y, total in zip(positions, left, strict=True):  # bars far below the limit are invisible: say it in words too
        ax.text(total + right * 0.01, y, f"{_duration(total * 3600)} ({100 * total / limit_h:.2g}% of the limit)",
                va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(positions, list(plans["scenario"]), fontsize=9)
    ax.set_xlabel("hours (estimated)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def gradcam(
    rows: pd.DataFrame, images: list[np.ndarray | None], true_maps: np.ndarray, pred_maps: np.ndarray
) -> Figure:
    """One line per row: the image, then its Grad-CAM for the true class and for the predicted class."""
    count = max(len(rows), 1)
    figure = _figure(9, 3 * count)
    axes = np.atleast_2d(figure.subplots(count, 3))
    for line, ((_, row), image) in enumerate(zip(rows.iterrows(), images, strict=False)):
        for ax in axes[line]:
            ax.axis("off")
        if image is None:
            axes[line][0].text(0.5, 0.5, "image not found", ha="center", va="center", transform=axes[line][0].transAxes)
            continue
        axes[line][0].imshow(image)
        axes[line][0].set_title(f"{row['kind']}: {row['id']}\nloss {row['loss']:.2f}", fontsize=8, loc="left")
        for ax, maps, what in ((axes[line][1], true_maps, "true"), (axes[line][2], pred_maps, "predicted")):
            ax.imshow(image)
            ax.imshow(maps[line], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"{what}: {row[what]}", fontsize=8, loc="left")
    return figure
