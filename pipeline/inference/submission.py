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
from pipeline.inference.predictions import format_submission, read_probs, submission_frame  # noqa: F401 - re-export

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    probs = read_probs(out.test_blend, cfg.data.classes)
    found = read_json(out.thresholds) if out.thresholds.exists() else {"kind": "none"}
    if found["kind"] != "none":
        log.info("submission: %s thresholds from %s", found["kind"], out.thresholds)
    frame = submission_frame(cfg, probs, out.submission, found)
    artifacts.write_csv(out.submission, frame)
    log.info("submission: %d rows -> %s", len(frame), out.submission)
