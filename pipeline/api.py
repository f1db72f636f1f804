"""The notebook API: what the make targets do, as methods, for Kaggle notebooks and Jupyter.

    from pipeline import Experiment
    exp = Experiment("configs/demo/baseline.yaml", set={"train.epochs": 3})
    exp.train(folds=[0]); exp.predict(); exp.submission()   # a partial run: fold 0 only (scores.json says so)
    exp.report()          # displays inline in Jupyter (plots embedded in the cell's HTML)

Every method runs the same stage function as `python -m pipeline <stage>` with the same arguments, so it
reads and writes the same files at the same paths. A user mistake raises `PipelineError`, whose message is
exactly the CLI's `error:` line; a stopped training (time budget, Ctrl-C, the notebook's stop button)
raises `pipeline.core.errors.Stopped`: run the same cell again to resume.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.bag import members
from pipeline.core.errors import UserError

log = logging.getLogger(__name__)


class PipelineError(UserError):
    """A user mistake seen through the API; str(error) is the CLI's `error: ...` line."""


def _overrides(values: Mapping[str, Any] | Iterable[str] | None) -> list[str]:
    """{"train.epochs": 3} or ["train.epochs=3"] -> ["train.epochs=3"] (values written as YAML, as --set reads them)."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in values.items()]  # JSON is YAML
    if isinstance(values, str):
        return values.split()
    return [str(item) for item in values]


def _ensure_logging() -> None:
    """Stage progress (epoch lines, scores) shows in the notebook when nothing else configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")


def run_stage(command: str, argv: list[str]) -> None:
    """Run one command as `python -m pipeline <command> <argv>` would, in this process; errors as PipelineError."""
    from pipeline.commands.cli import run_command
    from pipeline.core.cli import one_line

    _ensure_logging()
    try:
        run_command([command, *argv])
    except PipelineError:
        raise
    except UserError as exc:
        raise PipelineError(f"error: {one_line(str(exc))}") from None


def download(comp: str) -> Path:
    """`make download COMP=<comp>` (`demo`: the embedded offline demo); returns data/raw/<comp>/."""
    from pipeline.core import paths

    run_stage("download", ["--comp", comp])
    return paths.raw_dir(comp)


def init(comp: str, force: bool = False) -> Path:
    """`make init COMP=<comp>`: infer configs/<comp>/competition.yaml and baseline.yaml; returns baseline.yaml."""
    from pipeline.core import paths

    run_stage("init", ["--comp", comp, *(["--force"] if force else [])])
    return paths.configs_dir(comp) / "baseline.yaml"


class Experiment:
    """One experiment config (+ overrides), with a method per make target."""

    def __init__(self, config: str | Path, set: Mapping[str, Any] | Iterable[str] | None = None, sample: int = 0):  # noqa: A002
        self.config = Path(config)
        self.overrides = _overrides(set) + ([f"sample={sample}"] if sample else [])
        from pipeline.core.config import load_config

        try:
            self.cfg = load_config(self.config, self.overrides)
        except UserError as exc:
            raise PipelineError(f"error: {exc}") from None
        from pipeline.core import paths

        self.paths = paths.for_config(self.cfg)
        self._subset: list[int] | None = None  # folds asked for by train/predict(folds=...): a partial run

    def __repr__(self) -> str:
        return f"Experiment({str(self.config)!r}, overrides={self.overrides}) -> {self.paths.run}"

    def _args(self) -> list[str]:
        return ["--config", str(self.config), *(["--set", " ".join(self.overrides)] if self.overrides else [])]

    def _per_fold(self, command: str, folds: Iterable[int] | None) -> None:
        if folds is None:
            run_stage(command, self._args())
            return
        for fold in folds:
            run_stage(command, [*self._args(), "--fold", str(int(fold))])

    def folds(self, force: bool = False) -> Path:
        """`make folds`: data/processed/<comp>/folds.csv (skipped when it exists, unless force)."""
        if force or not self.paths.folds_csv.exists():
            run_stage("folds", [*self._args(), *(["--force"] if force else [])])
        return self.paths.folds_csv

    def _prerequisites(self) -> None:
        """What Make builds before training: the folds table, and the demo's offline weights file."""
        self.folds()
        pretrained = self.cfg.model.pretrained
        if self.cfg.comp == "demo" and isinstance(pretrained, str) and not Path(pretrained).exists():
            run_stage("weights", [])

    def train(self, folds: Iterable[int] | None = None) -> list[Path]:
        """`make train`: every fold, or only `folds`; returns the weights files. Re-running resumes or skips."""
        self._prerequisites()
        self._subset = None if folds is None else sorted({int(k) for k in folds})
        self._per_fold("train", folds)
        chosen = range(self.cfg.folds.n_folds) if folds is None else folds
        return [self.paths.member(seed).weights(int(k)) for k in chosen for seed in members(self.cfg)]  # bag: each

    def predict(self, folds: Iterable[int] | None = None) -> None:
        """`make predict`: OOF and test probabilities with TTA for every trained fold (or only `folds`)."""
        if folds is None:
            folds = [k for k in range(self.cfg.folds.n_folds)
                     if all(self.paths.member(seed).weights(k).exists() for seed in members(self.cfg))]  # fmt: skip
            if not folds:
                raise PipelineError(f"error: no trained fold under {self.paths.run}; run exp.train() first")
            folds = self._subset if self._subset is not None else folds
        else:
            self._subset = sorted({int(k) for k in folds})
        self._per_fold("predict", folds)

    def ensemble(self, folds: Iterable[int] | None = None) -> dict[str, Any]:
        """`make ensemble`: blend the folds, score the CV; returns scores.json's content. After train/predict with
        `folds=` (or given `folds`) only those folds are blended: a partial CV over their rows (`partial`,
        `folds_used` and `cv_rows` in scores.json) and a submission from their mean."""
        chosen = sorted({int(k) for k in folds}) if folds is not None else self._subset
        partial = chosen is not None and chosen != list(range(self.cfg.folds.n_folds))
        run_stage("ensemble", [*self._args(), *(["--folds", ",".join(map(str, chosen))] if partial else [])])
        return self.scores()

    def submission(self) -> Path:
        """`make submission`: submissions/<comp>/<exp>.csv, checked against sample_submission.csv; blends first
        (exp.ensemble()) when a partial run asked for folds or scores.json is missing."""
        if self._subset is not None or not self.paths.scores.exists():
            self.ensemble()
        run_stage("submission", self._args())
        return self.paths.submission

    def all(self) -> dict[str, Any]:
        """`make all`: train, predict, ensemble and submission for every fold; returns scores.json's content."""
        self.train()
        self.predict()
        scores = self.ensemble()
        self.submission()
        return scores

    def fold_log(self, fold: int) -> Any:
        """fold<k>/log.csv as a DataFrame: one row per epoch (loss, validation score, lr, img/s)."""
        import pandas as pd

        path = self.paths.train_log(fold)
        if not path.exists():
            raise PipelineError(f"error: {path} not found; run exp.train(folds=[{fold}]) first")
        return pd.read_csv(path)

    def scores(self) -> dict[str, Any]:
        """scores.json (metric, cv, folds, holdout, TTA views...)."""
        if not self.paths.scores.exists():
            raise PipelineError(f"error: {self.paths.scores} not found; run exp.ensemble() first")
        return json.loads(self.paths.scores.read_text())

    def report(self, tta: str | None = None) -> ReportView:
        """`make report`: writes report.html and returns it for inline display (the last value of a cell)."""
        run_stage("report", [*self._args(), *(["--tta", tta] if tta else [])])
        return ReportView(self.paths.report_html)

    def track(self) -> None:
        """Sync this experiment's files to the tracker its config names (`tracking:`), as the stages do."""
        from pipeline.reporting import tracking

        tracking.sync_experiment(self.cfg)


class ReportView:
    """report.html with its plots embedded (data: URIs), so Jupyter shows it inline without the files beside it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"report: {self.path}"

    def _repr_html_(self) -> str:
        text = self.path.read_text()
        for png in sorted(self.path.parent.glob("*.png")):
            encoded = base64.b64encode(png.read_bytes()).decode()
            text = text.replace(f"src='{html.escape(png.name)}'", f"src='data:image/png;base64,{encoded}'")
            text = text.replace(f'src="{html.escape(png.name)}"', f'src="data:image/png;base64,{encoded}"')
        return text
