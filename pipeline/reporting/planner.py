"""plan: will this experiment fit in a Kaggle Kernel's time limit? An estimate from measured throughput.

Reads the experiment's fold<k>/log.csv (train_images_per_s of every epoch), fold<k>/oof_by_view.json when
`make report TTA=1` measured the prediction speed, folds.csv and test.csv. Prints, per scenario, the
estimated hours of training, per-epoch validation, OOF and test prediction (folds x TTA views x images)
against the limit, and warns when a scenario leaves less than 10 % of the limit spare (kernel start-up,
package installs and weight loading take the rest). Writes nothing; report includes the same plan.

A seed bag (train.seeds) counts folds x seeds models: each member's log.csv, and every model predicts.

Scenarios: `inference kernel` (fold weights attached as a dataset, test prediction only: what a code
competition runs) and `full kernel` (the whole chain inside the kernel).

Estimates, stated in the output: prediction with no measurement runs at PREDICT_SPEEDUP x the training
throughput per view (a forward pass without backward; conservative). Measured on a SAMPLE=N run, the
plan is made for the full competition's row counts when its folds.csv exists. `--slowdown X` scales
everything for a kernel GPU X times slower than the machine that wrote the logs (e.g. a T4 against an A100).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field

import pandas as pd

from pipeline.core import paths
from pipeline.core.bag import members
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.core.run_config import config_of_run
from pipeline.data.tables import read_csv
from pipeline.inference.tta import AUTO_CANDIDATES
from pipeline.inference.tta_auto import effective_views

log = logging.getLogger(__name__)

DEFAULT_LIMIT = "9h"  # Kaggle's run-time limit for GPU notebooks and most code competitions
MARGIN = 0.10  # share of the limit kept free for start-up, installs and loading weights
PREDICT_SPEEDUP = 2.0  # inference images/s per view relative to training images/s, when not measured
PARTS = ("train", "validate", "predict_oof", "predict_test")


def parse_duration(text: str | float, flag: str = "--time-limit") -> float:
    """'9h', '90m', '1h30m', '45s' or a number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
        if match and any(match.groups()):
            hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise UserError(f"{flag} {text!r}: expected a duration like 9h, 90m, 1h30m or 3600") from None
    if seconds <= 0:
        raise UserError(f"{flag} {text!r}: must be more than zero")
    return seconds


def format_hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


@dataclass
class Throughput:
    train_images_per_s: float
    predict_images_per_s: float  # per TTA view
    predict_measured: bool
    epochs_measured: int


@dataclass
class Plan:
    table: pd.DataFrame  # scenario, train, validate, predict_oof, predict_test, total (seconds), fits
    limit_s: float
    throughput: Throughput
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def measure_throughput(cfg: Config) -> Throughput:
    """Median training images/s over every logged epoch; prediction speed from oof_by_view.json, else estimated."""
    out = paths.for_config(cfg)
    rates = []
    for fold, seed in [(k, seed) for k in range(cfg.folds.n_folds) for seed in members(cfg)]:  # a bag: each member
        path = out.member(seed).train_log(fold)
        if path.exists():
            log_table = read_csv(path, "training log")
            if "train_images_per_s" in log_table.columns:
                rates += [float(v) for v in log_table["train_images_per_s"].dropna() if float(v) > 0]
    if not rates:
        raise UserError(
            f"{out.train_log(0)}: no measured train_images_per_s in any fold's log.csv; train at least one epoch "
            "first (a quick measure: make train CONFIG=... SAMPLE=500 SET=train.epochs=1)"
        )
    images = seconds = 0.0
    for fold in range(cfg.folds.n_folds):
        try:
            stamp = json.loads(out.oof_by_view_stamp(fold).read_text())
            images += float(stamp["images"]) * len(stamp["views"]) * len(members(cfg))  # a bag's stamp: every member
            seconds += float(stamp["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    train_rate = float(pd.Series(rates).median())
    if images > 0 and seconds > 0:
        return Throughput(train_rate, images / seconds, True, len(rates))
    return Throughput(train_rate, train_rate * PREDICT_SPEEDUP, False, len(rates))


def count_rows(cfg: Config, test_images: int | None) -> tuple[int, int, list[str]]:
    """(training rows, test images, notes): the full competition's counts when the run is a SAMPLE=N run."""
    notes = []
    run, full = paths.for_config(cfg), paths.Paths(cfg.comp)
    folds_csv = full.folds_csv if cfg.sample and full.folds_csv.exists() else run.folds_csv
    if not folds_csv.exists():
        raise UserError(f"{folds_csv} not found; run `make folds CONFIG=...` first")
    n_train = len(read_csv(folds_csv, "folds table"))
    if cfg.sample:
        which = "the full competition's" if folds_csv == full.folds_csv else f"the sample's (no {full.folds_csv} yet)"
        notes.append(f"throughput measured on the SAMPLE={cfg.sample} run; row counts are {which}")
    if test_images is not None:
        return n_train, test_images, notes
    test_csv = full.test_csv if cfg.sample and full.test_csv.exists() else run.test_csv
    if not test_csv.exists():
        raise UserError(f"{test_csv} not found; run `make folds CONFIG=...` first, or pass --test-images N")
    n_test = len(read_csv(test_csv, "test listing"))
    notes.append(f"{n_test} test images from {test_csv} (a code competition's hidden test set may be larger: "
                 "--test-images N, Make: TEST_IMAGES=N)")  # fmt: skip
    return n_train, n_test, notes


def estimate(cfg: Config, rate: Throughput, n_train: int, n_test: int, slowdown: float = 1.0) -> pd.DataFrame:
    """Seconds per part for each scenario, summed over folds."""
    k, epochs, views = cfg.folds.n_folds, cfg.train.epochs, len(effective_views(cfg, list(AUTO_CANDIDATES)))
    valid_rows, seeds = n_train / k, len(members(cfg))  # a seed bag: folds x seeds models, each trained and predicting
    bag = f" x {seeds} seeds" if seeds > 1 else ""
    per_fold = {
        "train": epochs * (n_train - valid_rows) / rate.train_images_per_s,
        "validate": epochs * valid_rows / rate.predict_images_per_s,
        "predict_oof": valid_rows * views / rate.predict_images_per_s,
        "predict_test": n_test * views / rate.predict_images_per_s,
    }
    scenarios = {
        f"inference kernel ({k} folds{bag} x {views} views x {n_test} test images)": {"predict_test"},
        f"full kernel (train {k} folds{bag} x {epochs} epochs, then predict)": set(PARTS),
    }
    rows = []
    for name, parts in scenarios.items():
        row = {"scenario": name, **{p: (k * seeds * per_fold[p] * slowdown if p in parts else 0.0) for p in PARTS}}
        row["total"] = sum(row[p] for p in PARTS)
        rows.append(row)
    return pd.DataFrame(rows)


def suggest(cfg: Config, table: pd.DataFrame, limit_s: float) -> list[str]:
    """What would fit: fewer views or folds for inference; weights trained elsewhere for the full chain."""
    k, views = cfg.folds.n_folds, len(effective_views(cfg, list(AUTO_CANDIDATES)))
    budget = limit_s * (1 - MARGIN)
    warnings = []
    for _, row in table.iterrows():
        if row["total"] <= budget:
            continue
        line = (f"warning: {row['scenario']} needs ~{format_hours(row['total'])}, more than the "
                f"{format_hours(budget)} usable of a {format_hours(limit_s)} limit")  # fmt: skip
        if row["scenario"].startswith("inference"):
            per_view_fold = row["predict_test"] / (k * views)
            max_views, max_folds = int(budget // (per_view_fold * k)), int(budget // (per_view_fold * views))
            if max_views >= 1:
                line += f"; it fits with at most {max_views} TTA view(s) over {k} folds"
                line += f", or {max_folds} fold(s) with {views} views" if max_folds >= 1 else ""
            else:
                line += "; even one view over every fold is too slow: fewer folds, smaller images or a faster model"
        else:
            line += "; train elsewhere and attach the weights (inference kernel), or lower train.epochs or the folds"
        warnings.append(line)
    return warnings


def make_plan(cfg: Config, limit_s: float, test_images: int | None = None, slowdown: float = 1.0) -> Plan:
    if slowdown <= 0:
        raise UserError(f"--slowdown {slowdown}: must be more than zero (2 = the kernel is twice as slow)")
    rate = measure_throughput(cfg)
    n_train, n_test, notes = count_rows(cfg, test_images)
    table = estimate(cfg, rate, n_train, n_test, slowdown)
    table["fits"] = table["total"] <= limit_s * (1 - MARGIN)
    how = (
        "measured"
        if rate.predict_measured
        else f"estimated as {PREDICT_SPEEDUP:g}x training (make report TTA=1 measures it)"
    )
    notes.insert(0, f"training {rate.train_images_per_s:.1f} img/s (median of {rate.epochs_measured} logged epochs); "
                    f"prediction {rate.predict_images_per_s:.1f} img/s per view, {how}")  # fmt: skip
    if slowdown != 1.0:
        notes.append(f"every time x{slowdown:g} (--slowdown)")
    return Plan(table, limit_s, rate, notes, suggest(cfg, table, limit_s))


def format_plan(plan: Plan) -> str:
    lines = [f"time plan against a {format_hours(plan.limit_s)} kernel limit ({100 * MARGIN:.0f}% kept spare):"]
    for _, row in plan.table.iterrows():
        parts = ", ".join(f"{p.replace('_', ' ')} {format_hours(row[p])}" for p in PARTS if row[p] > 0)
        verdict = "fits" if row["fits"] else "DOES NOT FIT"
        lines.append(f"  {row['scenario']}: {format_hours(row['total'])} ({parts}) -> {verdict}")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)


def plan_from_args(args: argparse.Namespace, cfg: Config) -> Plan:
    limit = parse_duration(getattr(args, "time_limit", None) or DEFAULT_LIMIT)
    return make_plan(cfg, limit, getattr(args, "test_images", None), getattr(args, "slowdown", None) or 1.0)


def run(args: argparse.Namespace) -> None:
    cfg = config_of_run(args)  # what the run trained (SET included), unless SET is given now
    plan = plan_from_args(args, cfg)
    print(format_plan(plan))
    for warning in plan.warnings:
        log.warning("%s", warning)
