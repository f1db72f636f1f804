"""submission: turn the blended test probabilities into the competition's submission CSV.

Reads data/runs/<comp>/<exp>/test.csv and the competition's sample_submission.csv (data.test_csv);
writes submissions/<comp>/<exp>.csv with exactly sample_submission's ids, row order and columns, in its
format (data.submission_format): `label` (the most probable class), `probabilities` (one column per
class), `labels` (space-separated classes above the threshold; multi-label), or `numeric` (the class as
a number; ordinal targets). The file is checked against sample_submission before it is written.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from pipeline import artifacts, paths
from pipeline.cli import config_from_args
from pipeline.config import DataConfig
from pipeline.data import read_csv
from pipeline.ensemble import read_probs
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def _as_number(name: str) -> int | float:
    value = float(name)
    return int(value) if value.is_integer() else value


def format_submission(probs: pd.DataFrame, data: DataConfig, threshold: float = 0.5) -> pd.DataFrame:
    """id + the submission's columns, from `probs` (id + one column per class, in submission order)."""
    classes = np.array(data.classes)
    matrix = probs[data.classes].to_numpy()
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
    if fmt == "labels":
        picked = [
            " ".join(classes[row >= threshold]) if (row >= threshold).any() else classes[row.argmax()] for row in matrix
        ]
        frame[column] = picked
    elif fmt == "numeric":
        try:
            frame[column] = [_as_number(classes[i]) for i in matrix.argmax(axis=1)]
        except ValueError as exc:
            raise UserError("data.submission_format: numeric needs numeric class names; use label instead") from exc
    else:
        frame[column] = classes[matrix.argmax(axis=1)]
    return frame


def run(args: argparse.Namespace) -> None:
    from pipeline.validate import check_submission

    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    probs = read_probs(out.test_blend, cfg.data.classes)
    frame = format_submission(probs, cfg.data)
    if cfg.data.test_csv and not cfg.sample:
        sample_path = paths.raw_dir(cfg.comp) / cfg.data.test_csv
        id_column = read_csv(sample_path, "sample submission").columns[0]  # clear errors for a bad file
        sample = pd.read_csv(sample_path, dtype={id_column: str})  # other columns keep their numeric dtypes
        check_submission(frame, sample, where=str(out.submission),
                         probability_columns=cfg.data.submission_format == "probabilities")  # fmt: skip
    artifacts.write_csv(out.submission, frame)
    log.info("submission: %d rows -> %s", len(frame), out.submission)
