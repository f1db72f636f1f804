"""submission: turn the blended test probabilities into the competition's submission CSV.

Reads data/runs/<comp>/<exp>/test.csv and the competition's sample_submission.csv (data.test_csv);
writes submissions/<comp>/<exp>.csv with exactly sample_submission's ids, row order and columns, in its
format (data.submission_format): `label` (the most probable class), `probabilities` (one column per
class), `labels` (space-separated classes above the threshold; multi-label), or `numeric` (the class as
a number; ordinal targets). When ensemble wrote thresholds.json, its per-label thresholds (`labels`) or
ordinal cut points (`label`, `numeric`), or its per-class logit offsets (a prior shift, single-label:
pipeline.inference.prior_shift) decide instead of 0.5/argmax. A MAP@k competition (metric map@K)
writes the K most probable classes, space-separated, in the `label`/`labels` column. The file is checked
against sample_submission before it is written.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.core import artifacts, paths
from pipeline.core.artifacts import read_json
from pipeline.core.cli import config_from_args
from pipeline.core.metrics import submission_top_k
from pipeline.data.tables import read_typed_csv
from pipeline.inference.predictions import format_submission, read_probs  # noqa: F401 - format_submission: re-exported
from pipeline.inference.prior_shift import shift_table

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    from pipeline.inference.validate import check_submission

    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    probs = read_probs(out.test_blend, cfg.data.classes)
    found = read_json(out.thresholds) if out.thresholds.exists() else {"kind": "none"}
    threshold = found["thresholds"] if found["kind"] == "multi_label" else 0.5
    probs = shift_table(probs, cfg.data.classes, found)  # per-class logit offsets (prior shift) decide the argmax
    frame = format_submission(probs, cfg.data, threshold, found.get("cut_points"), top_k=submission_top_k(cfg.metric))
    if found["kind"] != "none":
        log.info("submission: %s thresholds from %s", found["kind"], out.thresholds)
    if cfg.data.test_csv:
        sample_path = paths.raw_dir(cfg.comp) / cfg.data.test_csv
        sample = read_typed_csv(sample_path, "sample submission")  # ids verbatim; number columns stay numbers
        if cfg.sample:  # a sample run predicts the first N test rows (pipeline.data.folds)
            sample = sample.head(cfg.sample)
        if set(frame.columns) == set(sample.columns):  # the sample's column order (its id column need not be first)
            frame = frame[list(sample.columns)]
        check_submission(frame, sample, where=str(out.submission),
                         probability_columns=cfg.data.submission_format == "probabilities",
                         id_column=cfg.data.submission_id_column)  # fmt: skip
    artifacts.write_csv(out.submission, frame)
    log.info("submission: %d rows -> %s", len(frame), out.submission)
