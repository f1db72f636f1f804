"""submission: turn the blended test probabilities into the competition's submission CSV.

Reads data/runs/<comp>/<exp>/test.csv and the competition's sample_submission.csv (data.test_csv);
writes submissions/<comp>/<exp>.csv with exactly sample_submission's ids, row order and columns, in its
format (data.submission_format): `label` (the most probable class), `probabilities` (one column per
class), `labels` (space-separated classes above the threshold; multi-label), or `numeric` (the class as
a number; ordinal targets). When ensemble wrote thresholds.json, its per-label thresholds (`labels`) or
ordinal cut points (`label`, `numeric`) decide instead of 0.5/argmax. A MAP@k competition (metric map@K)
writes the K most probable classes, space-separated, in the `label`/`labels` column. The file is checked
against sample_submission before it is written.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline import artifacts, paths
from pipeline.artifacts import read_json
from pipeline.cli import config_from_args
from pipeline.config import DataConfig
from pipeline.data import read_csv
from pipeline.ensemble import read_probs
from pipeline.errors import UserError
from pipeline.metrics import submission_top_k
from pipeline.recipe import ordinal_classes

log = logging.getLogger(__name__)


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


def run(args: argparse.Namespace) -> None:
    from pipeline.validate import check_submission

    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    probs = read_probs(out.test_blend, cfg.data.classes)
    found = read_json(out.thresholds) if out.thresholds.exists() else {"kind": "none"}
    threshold = found["thresholds"] if found["kind"] == "multi_label" else 0.5
    frame = format_submission(probs, cfg.data, threshold, found.get("cut_points"), top_k=submission_top_k(cfg.metric))
    if found["kind"] != "none":
        log.info("submission: %s thresholds from %s", found["kind"], out.thresholds)
    if cfg.data.test_csv:
        sample_path = paths.raw_dir(cfg.comp) / cfg.data.test_csv
        id_column = read_csv(sample_path, "sample submission").columns[0]  # clear errors for a bad file
        sample = pd.read_csv(sample_path, dtype={id_column: str})  # other columns keep their numeric dtypes
        if cfg.sample:  # a sample run predicts the first N test rows (pipeline.folds)
            sample = sample.head(cfg.sample)
        check_submission(frame, sample, where=str(out.submission),
                         probability_columns=cfg.data.submission_format == "probabilities")  # fmt: skip
    artifacts.write_csv(out.submission, frame)
    log.info("submission: %d rows -> %s", len(frame), out.submission)
