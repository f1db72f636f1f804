"""Prediction tables: reading a probability CSV (id + one column per class) and formatting a submission from one.

Reads the files it is given; writes nothing. ensemble, submission and blend share these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import Config, DataConfig
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv, read_typed_csv
from pipeline.inference.thresholds import ordinal_classes


def read_probs(path: Path, classes: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"{path} not found; run `make predict CONFIG=...` first")
    frame = read_csv(path, "probabilities")
    missing = [c for c in ["id", *classes] if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; re-run predict")
    frame = frame.astype({c: float for c in classes})
    bad = ~np.isfinite(frame[classes].to_numpy()).all(axis=1)
    if bad.any():  # never let NaN reach a metric (log_loss/roc_auc would raise, accuracy would lie)
        raise UserError(f"{path}: {int(bad.sum())} row(s) with empty, NaN or infinite probabilities (e.g. id "
                        f"{frame['id'].iloc[int(np.argmax(bad))]!r}); re-run predict")  # fmt: skip
    return frame


def _as_number(name: str) -> int | float:
    value = float(name)
    return int(value) if value.is_integer() else value


def format_submission(
    probs: pd.DataFrame, data: DataConfig, threshold: float | Sequence[float] = 0.5,
    cut_points: Sequence[float] | None = None, top_k: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """id + the submission's columns, from `probs` (id + one column per class, in submission order).

    `threshold`: one for every label, or one per label (multi-label). `cut_points`: ordinal classes are
    then the expected class (sum_k k * p_k) cut at these points instead of the most probable class.
    `top_k` (MAP@k metrics): the label column lists the k most probable classes, most probable first.
    """
    classes = np.array(data.classes)
    matrix = probs[data.classes].to_numpy()
    threshold = np.asarray(threshold, dtype=float)
    frame = pd.DataFrame({data.submission_id_column: probs["id"].to_numpy()})
    fmt = data.submission_format
    if fmt == "probabilities":
        columns = data.submission_columns or data.classes
        unknown = [c for c in columns if c not in data.classes]
        if unknown:
            raise UserError(f"data.submission_columns: {unknown} are not classes (data.classes); fix competition.yaml")
        for column in columns:
            frame[column] = probs[column].to_numpy()
        return frame
    column = (data.submission_columns or [data.label_column or "label"])[0]
    if top_k and fmt in ("label", "labels"):
        frame[column] = [" ".join(classes[np.argsort(-row, kind="stable")[:top_k]]) for row in matrix]
        return frame
    best = ordinal_classes(matrix, list(cut_points)) if cut_points is not None else matrix.argmax(axis=1)
    if fmt == "labels":
        picked = [
            " ".join(classes[row >= threshold]) if (row >= threshold).any() else classes[row.argmax()] for row in matrix
        ]
        frame[column] = picked
    elif fmt == "numeric":
        try:
            frame[column] = [_as_number(classes[i]) for i in best]
        except ValueError as exc:
            raise UserError("data.submission_format: numeric needs numeric class names; use label instead") from exc
    else:
        frame[column] = classes[best]
    return frame


def mean_of_members(frames: Sequence[pd.DataFrame], classes: list[str], what: str) -> pd.DataFrame:
    """A seed bag's probabilities (pipeline.core.bag): the members' tables (same rows: id, maybe view, classes),
    averaged class by class; members whose rows differ are refused, naming `what`."""
    keys = [c for c in frames[0].columns if c not in classes]
    for frame in frames[1:]:
        if not frame[keys].reset_index(drop=True).equals(frames[0][keys].reset_index(drop=True)):
            raise UserError(f"{what}: the seed bag's members hold different rows; re-run predict for this fold")
    mean = frames[0][keys].reset_index(drop=True).copy()
    mean[classes] = np.mean([frame[classes].to_numpy(dtype=float) for frame in frames], axis=0)
    return mean


def submission_frame(cfg: Config, probs: pd.DataFrame, where: Path, thresholds: dict | None = None,
                     require_sample: bool = True) -> pd.DataFrame:  # fmt: skip
    """The submission of `probs` (id + class probabilities): formatted with the fitted decisions (`thresholds`: the
    ensemble's thresholds.json), in sample_submission's column order (its id column need not be first), checked
    against it (`require_sample`: a missing sample_submission is an error; make blend also runs on probability files
    alone). The submission stage, make blend and a Kernel's blend all call this one function."""
    from pipeline.core.metrics import submission_top_k
    from pipeline.inference.prior_shift import shift_table
    from pipeline.inference.validate import check_submission

    found = thresholds or {"kind": "none"}
    threshold = found["thresholds"] if found["kind"] == "multi_label" else 0.5
    probs = shift_table(probs, cfg.data.classes, found)  # per-class logit offsets (a prior shift) decide the argmax
    frame = format_submission(probs, cfg.data, threshold, found.get("cut_points"), top_k=submission_top_k(cfg.metric))
    sample_path = paths.raw_dir(cfg.comp) / cfg.data.test_csv if cfg.data.test_csv else None
    if sample_path is not None and (require_sample or sample_path.is_file()):
        sample = read_typed_csv(sample_path, "sample submission")  # ids verbatim; number columns stay numbers
        if cfg.sample:  # a sample run predicts the first N test rows (pipeline.data.folds)
            sample = sample.head(cfg.sample)
        if set(frame.columns) == set(sample.columns):
            frame = frame[list(sample.columns)]
        check_submission(frame, sample, where=str(where),
                         probability_columns=cfg.data.submission_format == "probabilities",
                         id_column=cfg.data.submission_id_column)  # fmt: skip
    return frame
