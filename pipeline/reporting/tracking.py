"""tracking: copy what the pipeline's own files record to MLflow, TensorBoard or Weights & Biases (opt-in).

The files stay the truth; a tracker is a view of them, rebuilt from them at any time. `tracking:` in an
experiment's config (or `make ... TRACK=mlflow`) picks the tracker: none (default), mlflow, tensorboard, wandb.

Reads, under data/runs/<comp>/<exp>/: config.yaml (the resolved config, as params), fold<k>/log.csv (every
numeric column of each epoch row: losses, scores, lr, img/s, data-wait share, as metrics with step = epoch),
scores.json (cv, per-fold scores, holdout, TTA choice), report.html and report_*.png (artifacts), and
data/runs/<comp>/leaderboard.csv (public/private scores, when `make scores` wrote it).
Writes, per tracker:
- mlflow: one MLflow experiment per competition, one run per pipeline experiment, a child run per fold, in a
  local store (SQLite + artifacts) under data/mlruns/ unless MLFLOW_TRACKING_URI says otherwise.
- tensorboard: event files under data/runs/<comp>/<exp>/tb/: fold<k>/ (epoch scalars), experiment/ (scores).
- wandb: one run per fold and one for the experiment, grouped by experiment; offline (files under
  data/runs/<comp>/<exp>/wandb/) unless you are logged in.

Called by train at the end of each fold (`sync_fold`) and after ensemble, report and scores (`after_stage`).
A tracker that is missing or fails never stops the pipeline: one warning line, and the work goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.config import TRACKERS, training_fingerprint  # noqa: F401 - TRACKERS: the tracking key's choices

if TYPE_CHECKING:
    import argparse

    from pipeline.core.config import Config

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'kaggle-pipeline[track]'"
_warned: set[str] = set()


def _warn(tracker: str, message: str) -> None:
    """One warning line per tracker and process; the pipeline carries on."""
    if tracker not in _warned:
        _warned.add(tracker)
        log.warning("warning: tracking (%s): %s; the pipeline goes on without it", tracker, message)


def _guarded(tracker: str, work: Any, *args: Any) -> None:
    try:
        work(*args)
    except ImportError as exc:
        _warn(tracker, f"{exc.name or tracker} is not installed ({INSTALL_HINT})")
    except Exception as exc:  # noqa: BLE001 - a tracker's failure must never stop training
        _warn(tracker, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


# ---- what the files say -------------------------------------------------------------------------------------------


def fold_rows(log_csv: Path) -> list[dict[str, float]]:
    """log.csv -> one dict per epoch of its numeric, finite values (epoch included)."""
    import pandas as pd

    if not log_csv.exists():
        return []
    frame = pd.read_csv(log_csv)
    rows = []
    for record in frame.to_dict("records"):
        values = {k: float(v) for k, v in record.items() if _is_number(v)}
        if "epoch" in values:
            rows.append(values)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def experiment_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """scores.json -> flat metrics: cv, cv_thresholded, holdout, holdout_thresholded, fold<k>, tta gain."""
    metrics = {k: float(scores[k]) for k in ("cv", "cv_thresholded", "holdout", "holdout_thresholded")
               if _is_number(scores.get(k))}  # fmt: skip
    values = scores.get("folds") or []
    for k, value in zip(
        scores.get("folds_used") or range(len(values)), values, strict=False
    ):  # a partial run: its folds
        if _is_number(value):
            metrics[f"fold{k}"] = float(value)
    auto = scores.get("tta_auto") or {}
    for key in ("nested_cv", "identity_cv"):
        if _is_number(auto.get(key)):
            metrics[f"tta_auto_{key}"] = float(auto[key])
    return metrics


def leaderboard_metrics(runs: Path, experiment: str) -> dict[str, float]:
    """The latest public/private leaderboard scores of `experiment` from leaderboard.csv (newest first)."""
    import pandas as pd

    path = runs / "leaderboard.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    if "experiment" not in table.columns:
        return {}
    rows = table[table["experiment"].astype("string") == experiment]
    out = {}
    for column in ("public_score", "private_score"):
        values = pd.to_numeric(rows.get(column, pd.Series(dtype=float)), errors="coerce").dropna()
        if len(values):
            out[column] = float(values.iloc[0])
    return out


def config_params(cfg: Config) -> dict[str, str]:
    from pipeline.core.config import flatten, to_dict

    return {k: str(v) for k, v in flatten(to_dict(cfg)).items()}


def report_files(run: Path) -> list[Path]:
    return sorted(run.glob("report_*.png")) + [p for p in (run / "report.html", run / "lr_find.png") if p.exists()]


# ---- MLflow -------------------------------------------------------------------------------------------------------


def mlflow_uri() -> str:
    from pipeline.core.paths import mlflow_dir

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = mlflow_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


class MlflowSink:
    """One MLflow experiment per competition; a parent run per pipeline experiment (found again by its tag),
    a child run per fold. Epoch rows already logged (tag pipeline.epochs) are not logged twice."""

    def __init__(self, cfg: Config) -> None:
        from mlflow import MlflowClient

        for name in (
            "mlflow",
            "alembic",
        ):  # after mlflow's import, which sets its own levels: schema set-up is not news
            logging.getLogger(name).setLevel(logging.WARNING)

        from pipeline.core import paths

        self.cfg, self.out = cfg, paths.for_config(cfg)
        self.client = MlflowClient(mlflow_uri())
        found = self.client.get_experiment_by_name(cfg.comp)
        if found is None:
            location = None
            if self.client.tracking_uri.startswith("sqlite:///"):
                location = (paths.mlflow_dir() / "artifacts" / cfg.comp).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(cfg.comp, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        self.fingerprint = training_fingerprint(cfg)

    def _find(self, tags: dict[str, str]) -> Any:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0] if runs else None

    def parent(self) -> str:
        tags = {"pipeline.run": self.out.run.name, "pipeline.fingerprint": self.fingerprint}
        run = self._find({**tags, "pipeline.level": "experiment"})
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=self.out.run.name,
                                         tags={**tags, "pipeline.level": "experiment"})  # fmt: skip
        run_id = run.info.run_id
        self._log_new_params(run_id, config_params(self.cfg))
        return run_id

    def _log_new_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in have]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=new[start : start + 100])

    def fold(self, fold: int) -> None:
        from mlflow.entities import Metric

        parent = self.parent()
        tags = {"pipeline.run": self.out.run.name, "pipeline.fingerprint": self.fingerprint,
                "pipeline.level": "fold", "pipeline.training.fold": str(fold)}  # fmt: skip
        run = self._find(tags)
        if run is None:
            run = self.client.create_run(self.experiment_id, run_name=f"fold{fold}",
                                         tags={**tags, "mlflow.parentRunId": parent})  # fmt: skip
        run_id = run.info.run_id
        done = int(run.data.tags.get("pipeline.epochs", "0"))
        rows = fold_rows(self.out.train_log(fold))
        now = _now_ms()
        metrics = [Metric(k, v, now, int(row["epoch"])) for row in rows if row["epoch"] > done
                   for k, v in row.items() if k != "epoch"]  # fmt: skip
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self.client.set_tag(run_id, "pipeline.epochs", str(max([done, *(int(r["epoch"]) for r in rows)])))
        if self.out.train_log(fold).exists():
            self.client.log_artifact(run_id, str(self.out.train_log(fold)))
        self.client.set_terminated(run_id, "FINISHED" if self.out.weights(fold).exists() else "RUNNING")

    def experiment(self) -> None:
        from mlflow.entities import Metric

        run_id = self.parent()
        scores = _read_json(self.out.scores)
        values = {**experiment_metrics(scores), **leaderboard_metrics(self.out.runs, self.out.run.name)}
        now = _now_ms()
        if values:
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])
        if scores.get("tta_views"):
            self.client.set_tag(run_id, "pipeline.tta_views", "+".join(scores["tta_views"]))
        for path in [self.out.scores, self.out.resolved_config, *report_files(self.out.run)]:
            if path.exists():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


# ---- TensorBoard --------------------------------------------------------------------------------------------------


def _rewrite_events(folder: Path, scalars: list[tuple[str, float, int]], texts: dict[str, str] | None = None) -> None:
    """Rebuild one TensorBoard run folder from scratch (its source files are the truth, so no duplicates)."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for tag, value, step in scalars:
            writer.add_scalar(tag, value, step)
        for tag, text in (texts or {}).items():
            writer.add_text(tag, text, 0)
    finally:
        writer.close()


def tensorboard_fold(cfg: Config, fold: int) -> None:
    from pipeline.core import paths

    out = paths.for_config(cfg)
    rows = fold_rows(out.train_log(fold))
    scalars = [(k, v, int(row["epoch"])) for row in rows for k, v in row.items() if k != "epoch"]
    _rewrite_events(out.tensorboard / f"fold{fold}", scalars)


def tensorboard_experiment(cfg: Config) -> None:
    from pipeline.core import paths
    from pipeline.core.config import dump_yaml, to_dict

    out = paths.for_config(cfg)
    scores = _read_json(out.scores)
    values = {**experiment_metrics(scores), **leaderboard_metrics(out.runs, out.run.name)}
    scalars = [(k, v, 0) for k, v in values.items()]
    config_text = "```\n" + dump_yaml(to_dict(cfg)) + "\n```"
    _rewrite_events(out.tensorboard / "experiment", scalars, {"config": config_text})


# ---- Weights & Biases (not exercised by the tests: wandb is not installed here) -----------------------------------


def _wandb_run(cfg: Config, name: str) -> Any:
    import wandb

    from pipeline.core import paths

    out = paths.for_config(cfg)
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        logged_in = (Path.home() / ".netrc").exists() and "api.wandb.ai" in (Path.home() / ".netrc").read_text()
        os.environ["WANDB_MODE"] = "online" if logged_in else "offline"
    folder = out.run / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.comp, group=out.run.name, name=name, dir=str(folder), config=config_params(cfg),
                      reinit="finish_previous")  # fmt: skip


def wandb_fold(cfg: Config, fold: int) -> None:
    from pipeline.core import paths

    rows = fold_rows(paths.for_config(cfg).train_log(fold))
    run = _wandb_run(cfg, f"fold{fold}")
    try:
        for row in rows:
            run.log({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    finally:
        run.finish()


def wandb_experiment(cfg: Config) -> None:
    from pipeline.core import paths

    out = paths.for_config(cfg)
    run = _wandb_run(cfg, "experiment")
    try:
        run.summary.update({**experiment_metrics(_read_json(out.scores)),
                            **leaderboard_metrics(out.runs, out.run.name)})  # fmt: skip
    finally:
        run.finish()


# ---- entry points -------------------------------------------------------------------------------------------------


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes, and only it syncs


def sync_fold(cfg: Config, fold: int) -> None:
    """A fold's epoch rows (log.csv) and the config to the tracker: the "fold_trained" event training emits."""
    if cfg.tracking == "none" or not _is_rank_zero():
        return
    if cfg.tracking == "mlflow":
        _guarded("mlflow", lambda: MlflowSink(cfg).fold(fold))
    elif cfg.tracking == "tensorboard":
        _guarded("tensorboard", tensorboard_fold, cfg, fold)
    elif cfg.tracking == "wandb":
        _guarded("wandb", wandb_fold, cfg, fold)


def sync_experiment(cfg: Config) -> None:
    """scores.json, the report's files and the leaderboard score to the tracker (after ensemble, report, scores)."""
    if cfg.tracking == "none" or not _is_rank_zero():
        return
    if cfg.tracking == "mlflow":
        _guarded("mlflow", lambda: MlflowSink(cfg).experiment())
    elif cfg.tracking == "tensorboard":
        _guarded("tensorboard", tensorboard_experiment, cfg)
    elif cfg.tracking == "wandb":
        _guarded("wandb", wandb_experiment, cfg)


def _experiments_of(comp: str) -> list[Config]:
    """Every experiment of a competition whose resolved config asks for a tracker (for `scores --comp`)."""
    import yaml

    from pipeline.core.config import Config, build_section
    from pipeline.core.paths import Paths

    found = []
    for path in sorted(Paths(comp).runs.glob("*/config.yaml")):
        try:
            values = yaml.safe_load(path.read_text()) or {}
            if values.get("tracking", "none") != "none":
                found.append(build_section(Config, values, ""))
        except Exception as exc:  # noqa: BLE001 - an old or odd config must not stop `make scores`
            log.debug("tracking: skipping %s (%s)", path, exc)
    return found


def subscribe() -> None:
    """Hear what stages announce (pipeline.core.events): the command layer calls this before a command runs."""
    from pipeline.core import events

    events.subscribe("fold_trained", sync_fold)


SYNCED_STAGES = ("ensemble", "report", "scores")


def after_stage(args: argparse.Namespace) -> None:
    """The CLI's hook after a stage succeeded: ensemble, report and scores update the experiment's run."""
    if args.command not in SYNCED_STAGES:
        return
    if args.command == "scores":
        for cfg in _experiments_of(args.comp or ""):
            sync_experiment(cfg)
        return
    from pipeline.core.config import load_config

    sync_experiment(load_config(args.config, args.overrides))


def full_mlflow_installed() -> bool:
    """The `mlflow` distribution (with its UI server), not only `mlflow-skinny`, which has the same import name."""
    import importlib.metadata
    import importlib.util

    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("flask") is not None


def run(args: argparse.Namespace) -> None:
    """`python -m pipeline mlflow-ui`: MLflow's own UI over the local store, on 127.0.0.1 only."""
    import subprocess
    import sys

    from pipeline.core.errors import UserError

    if not full_mlflow_installed():
        raise UserError(
            "mlflow-ui needs the full MLflow package (its UI server): `.venv/bin/pip install mlflow`; "
            "the [track] extra installs mlflow-skinny, which logs and reads runs but has no UI"
        )
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", mlflow_uri(), "--host", "127.0.0.1",
               "--port", str(args.port)]  # fmt: skip
    log.info("MLflow UI: http://127.0.0.1:%d (Ctrl-C to stop)", args.port)
    subprocess.run(command, check=False)
