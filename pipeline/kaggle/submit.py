"""submit: upload an experiment's submission to the Kaggle leaderboard, validated first.

Reads: submissions/<comp>/<exp>.csv, the competition's sample_submission (data/raw/<comp>/<data.test_csv>), and
data/runs/<comp>/<exp>/scores.json (metric, cv) for the description. Writes nothing locally: the submission's
description records the experiment, its CV score and the git commit, which is how `scores` joins the leaderboard
back to local experiments. Before the upload Kaggle is asked whether it would take it (pipeline.kaggle.wait); after
it, submit waits for the score (--wait seconds, Make's WAIT; 0 skips) and prints it, or Kaggle's error.
kaggle 2.2.4 reports a failed upload only in its return value (its CLI exits 0), so the answer is checked here and
anything but an accepted submission is an error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.artifacts import read_json
from pipeline.core.cli import config_from_args
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.core.paths import for_config, raw_dir
from pipeline.core.provenance import describe, experiment_from_description, git_commit  # noqa: F401 - re-exported
from pipeline.data.tables import read_typed_csv
from pipeline.inference.validate import check_submission
from pipeline.kaggle import wait as kaggle_wait

log = logging.getLogger(__name__)


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV with its first (id) column kept as text verbatim (`007`, `NA`), number columns as numbers."""
    if not Path(path).exists():
        raise UserError(f"{path} not found; {what}")
    return read_typed_csv(path, "table")


def cv_score(scores_path: Path) -> tuple[str | None, float | None]:
    if not scores_path.exists():
        log.warning("warning: %s not found; the description will say CV n/a (run `make ensemble` first)", scores_path)
        return None, None
    scores: dict[str, Any] = read_json(scores_path)
    try:
        return str(scores["metric"]), float(scores["cv"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{scores_path}: expected keys metric and cv (a number); re-run `make ensemble`") from exc


def validate_file(cfg: Config, submission: Path) -> None:
    """check_submission on the file as Kaggle will read it, against the competition's sample_submission."""
    frame = read_table(submission, f"run `make submission CONFIG=configs/{cfg.comp}/{cfg.exp}.yaml` first")
    sample_path = raw_dir(cfg.comp) / (cfg.data.test_csv or "sample_submission.csv")
    if not sample_path.exists() and not cfg.data.test_csv:
        # No sample to compare with (test ids come from the image folder): check only what needs no reference.
        log.warning("warning: %s not found; checking %s for empty cells only", sample_path, submission)
        sample = frame
    else:
        sample = read_table(sample_path, f"run `make download COMP={cfg.comp}` first")
    formats = {"probabilities": True, "numeric": False}
    check_submission(
        frame, sample, str(submission), formats.get(cfg.data.submission_format), cfg.data.submission_id_column
    )


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    layout = for_config(cfg)
    if cfg.sample:
        raise UserError(f"sample={cfg.sample}: a SAMPLE run predicts part of the test set only; submit a full run")
    wait = kaggle_wait.wait_seconds(args)
    validate_file(cfg, layout.submission)
    metric, cv = cv_score(layout.scores)
    message = describe(layout.run.name, metric, cv, git_commit(Path(__file__).resolve().parent) or "unknown")
    submit(cfg.comp, layout.submission, message, wait)


def submit(comp: str, file: Path, message: str, wait: float = 0.0) -> int:
    """Upload `file` with `message`, then wait up to `wait` s for its score; the submission's id.

    UserError if Kaggle would refuse it (closed, code-only, no submissions left), does not accept it, or scores it
    as an error."""
    from pipeline.kaggle.client import Kaggle  # imports the client: only once the file has passed validation

    kaggle = Kaggle()
    kaggle_wait.check_can_submit(kaggle, comp, csv_upload=True)
    ref, answer = kaggle.submit(comp, file, message)
    log.info("submitted %s to %s as #%s: %s", file, comp, ref or "?", answer)
    log.info("description: %s", message)
    kaggle_wait.finish(kaggle, comp, ref, wait)
    return ref
