"""submit: upload an experiment's submission to the Kaggle leaderboard, validated first.

Reads: submissions/<comp>/<exp>.csv, the competition's sample_submission (data/raw/<comp>/<data.test_csv>), and
data/runs/<comp>/<exp>/scores.json (metric, cv) for the description. Writes nothing locally: the submission's
description records the experiment, its CV score and the git commit, which is how `scores` joins the leaderboard
back to local experiments. kaggle 2.2.4 reports a failed upload only in its return value (its CLI exits 0), so
the answer is checked here and anything but an accepted submission is an error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.artifacts import read_json
from pipeline.cli import config_from_args
from pipeline.config import Config
from pipeline.data import read_typed_csv
from pipeline.errors import UserError
from pipeline.paths import for_config, raw_dir
from pipeline.provenance import describe, experiment_from_description, git_commit  # noqa: F401 - re-exported
from pipeline.validate import check_submission

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
    check_submission(frame, sample, str(submission), formats.get(cfg.data.submission_format))


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    layout = for_config(cfg)
    if cfg.sample:
        raise UserError(f"sample={cfg.sample}: a SAMPLE run predicts part of the test set only; submit a full run")
    validate_file(cfg, layout.submission)
    metric, cv = cv_score(layout.scores)
    message = describe(layout.run.name, metric, cv, git_commit(Path(__file__).resolve().parent) or "unknown")
    submit(cfg.comp, layout.submission, message)


def submit(comp: str, file: Path, message: str) -> int:
    """Upload `file` with `message`; the submission's id. UserError if Kaggle does not accept it."""
    from pipeline.kaggle_api import Kaggle  # imports the client: only once the file has passed validation

    kaggle = Kaggle()
    limits = _limits(kaggle, comp)
    if limits is not None and limits.num_today > 0 and limits.num_allowed_now == 0:  # zeros mean "not on a team yet"
        raise UserError(
            f"no submissions left today for '{comp}' ({limits.num_today} used); try again after midnight UTC"
        )
    ref, answer = kaggle.submit(comp, file, message)
    log.info("submitted %s to %s as #%s: %s", file, comp, ref or "?", answer)
    log.info("description: %s", message)
    limits = _limits(kaggle, comp)
    if limits is not None:
        log.info(
            "%d submission(s) left today; `make scores COMP=%s` shows the leaderboard", limits.num_allowed_now, comp
        )
    return ref


def _limits(kaggle: Any, comp: str) -> Any:
    """Submission limits, or None: a hint only, so it never stops a submission on its own."""
    try:
        return kaggle.submission_limits(comp)
    except UserError as exc:
        log.debug("submission limits unavailable: %s", exc)
        return None
