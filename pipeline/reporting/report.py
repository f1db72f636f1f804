"""report: one HTML page that shows what an experiment learned and where it fails.

Reads, under data/runs/<comp>/<exp>/: fold<k>/log.csv (learning curves), scores.json (CV per fold),
oof.csv (every training row's OOF probabilities; labels from folds.csv), fold<k>/oof_plain.csv and
fold<k>/oof_by_view.csv (TTA gains, see pipeline.inference.view_scores), lr_find.png when `make lr-find` made one;
training images from the competition's raw folder (top losses, Grad-CAM with each row's fold model). Writes
next to report.html the plots report_curves.png, report_confusion.png, report_top_losses.png,
report_gradcam.png (pipeline.reporting.gradcam), report_tta.png, report_plan.png, and report.html last. A section
whose inputs do not exist yet says which stage makes them. Single-label runs also get per-class recall of every
fold and of the ensemble under the run's decision (thresholds.json; pipeline.reporting.class_recall).

`--tta` (Make: TTA=1, or TTA=all for every known view) first measures each TTA view alone on the OOF
rows, one extra pass over the training images per fold; without it the TTA section compares no TTA with
the configured blend, which costs nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import artifacts, paths
from pipeline.core.bag import bag_seeds
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.core.run_config import config_of_run
from pipeline.data.tables import encode_targets, load_image, read_csv
from pipeline.inference import view_scores
from pipeline.inference.tta import AUTO_CANDIDATES
from pipeline.inference.tta_auto import effective_views
from pipeline.reporting import class_recall, interpret, planner, plots

log = logging.getLogger(__name__)

TOP_LOSSES = 16
THUMBNAIL = 192  # pixels, longest side, in the top-losses grid


@dataclass
class Report:
    """What the page shows, kept as data so tests can check the numbers behind the plots."""

    sections: list[tuple[str, str]] = field(default_factory=list)  # (title, html body)
    scores: dict | None = None
    confusion: np.ndarray | None = None
    top_losses: pd.DataFrame | None = None
    recall: pd.DataFrame | None = None  # per-class recall: folds, all OOF, held-out mean fold and ensemble
    tta: pd.DataFrame | None = None
    plan: planner.Plan | None = None
    gradcam: pd.DataFrame | None = None  # the rows the Grad-CAM section explains (pipeline.reporting.gradcam.pick_rows)
    written: list[Path] = field(default_factory=list)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _img(path: Path, alt: str) -> str:
    return f'<img src="{html.escape(path.name)}" alt="{html.escape(alt)}">'


def _number(value: float, digits: int = 4) -> str:
    """Scores to `digits` decimals; learning rates in scientific notation; throughputs to one decimal."""
    if value == 0 or not np.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) < 10 ** -(digits - 1):
        return f"{value:.2e}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(index=False, escape=True, float_format=lambda v: _number(v, digits), na_rep="", border=0)


def read_oof(cfg: Config, out: paths.Paths) -> tuple[pd.DataFrame, np.ndarray, np.ndarray] | None:
    """(folds table, targets, OOF probabilities in folds.csv order), or None before ensemble has run."""
    if not out.oof_all.exists() or not out.folds_csv.exists():
        return None
    folds = read_csv(out.folds_csv, "folds table").astype({"fold": int})
    oof = read_csv(out.oof_all, "OOF probabilities")
    missing = [c for c in ["id", *cfg.data.classes] if c not in oof.columns]
    if missing:
        raise UserError(f"{out.oof_all}: missing column(s) {missing}; re-run `make ensemble`")
    oof = oof.set_index("id")
    if not folds["id"].isin(oof.index).all():
        raise UserError(f"{out.oof_all}: ids differ from {out.folds_csv}; re-run `make predict ensemble`")
    probs = oof.loc[folds["id"], cfg.data.classes].astype(float).to_numpy()
    return folds, encode_targets(folds["label"], cfg.data), probs


def write_confusion(path: Path, targets: np.ndarray, probs: np.ndarray, classes: list[str], task: str) -> np.ndarray:
    """Plot the OOF confusion (per-label counts for multi-label) to `path`; return the counts it shows."""
    matrix = interpret.confusion_counts(targets, probs, task)
    artifacts.save_figure(path, plots.confusion(matrix, classes, task))
    return matrix


def thumbnail(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        image = Image.fromarray(load_image(path))
    except UserError:
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return np.asarray(image)


def curves_section(cfg: Config, out: paths.Paths, report: Report) -> str:
    logs = {}
    first = out.member((bag_seeds(cfg) or [None])[0])  # a seed bag: its first member's curves
    for fold in range(cfg.folds.n_folds):
        if first.train_log(fold).exists():
            logs[fold] = pd.read_csv(first.train_log(fold))
    if not logs:
        return _note("no fold<k>/log.csv yet: run `make train`")
    path = artifacts.save_figure(out.report_png("curves"), plots.learning_curves(logs, cfg.metric))
    report.written.append(path)
    last = pd.concat([log.tail(1).assign(fold=k) for k, log in sorted(logs.items()) if len(log)], ignore_index=True)
    last = last[["fold", *[c for c in last.columns if c != "fold"]]]
    return _img(path, "learning curves") + "<p>Last logged epoch of each fold:</p>" + _table(last)


def cv_section(cfg: Config, out: paths.Paths, report: Report) -> str:
    if not out.scores.exists():
        return _note(f"no {out.scores.name} yet: run `make ensemble`")
    scores = artifacts.read_json(out.scores)
    report.scores = scores
    folds = np.asarray(scores.get("folds") or [], dtype=float)
    sizes = read_csv(out.folds_csv, "folds table")["fold"].astype(int).value_counts() if out.folds_csv.exists() else {}
    table = pd.DataFrame({"fold": range(len(folds)), "rows": [int(sizes.get(k, 0)) for k in range(len(folds))],
                          scores["metric"]: folds})  # fmt: skip
    summary = [f"CV {scores['metric']} = {scores['cv']:.4f} over every OOF row"]
    if len(folds):
        summary.append(f"folds {folds.mean():.4f} ± {folds.std():.4f} (min {folds.min():.4f}, max {folds.max():.4f})")
    if scores.get("holdout") is not None:
        summary.append(f"held-out test {scores['holdout']:.4f}")
    return "<p>" + html.escape("; ".join(summary)) + "</p>" + _table(table)


def confusion_section(cfg: Config, out: paths.Paths, oof: tuple | None, report: Report) -> str:
    if oof is None:
        return _note(f"no {out.oof_all.name} yet: run `make ensemble`")
    _, targets, probs = oof
    path = out.report_png("confusion")
    report.confusion = write_confusion(path, targets, probs, cfg.data.classes, cfg.data.task)
    report.written.append(path)
    if cfg.data.task == "multi_label":
        counts = pd.DataFrame(report.confusion, columns=interpret.MULTI_LABEL_COUNTS)
        counts.insert(0, "label", cfg.data.classes)
        pairs = interpret.most_confused_multilabel(targets, probs, cfg.data.classes)
        body = _img(path, "per-label counts") + "<p>Per-label counts at threshold 0.5:</p>" + _table(counts)
        return body + "<h3>Most confused: a missed label and the label predicted instead</h3>" + _table(pairs)
    pairs = interpret.most_confused(report.confusion, cfg.data.classes)
    body = _img(path, "confusion matrix")
    return body + "<h3>Most confused pairs</h3>" + (_table(pairs, 3) if len(pairs) else _note("no mistakes"))


def recall_section(cfg: Config, out: paths.Paths, oof: tuple | None, report: Report) -> str:
    if oof is None or cfg.data.task == "multi_label":
        return _note("per-class recall: single-label runs after `make ensemble`")
    report.recall = class_recall.recall_table(cfg, *oof)
    return "<p>Recall under the run's decision (thresholds.json), per fold and for the ensemble:</p>" + _table(
        report.recall, 3
    )


def top_losses_section(cfg: Config, out: paths.Paths, oof: tuple | None, report: Report) -> str:
    if oof is None:
        return _note(f"no {out.oof_all.name} yet: run `make ensemble`")
    folds, targets, probs = oof
    rows = interpret.top_losses(folds, targets, probs, cfg.data.classes, cfg.data.task, n=TOP_LOSSES)
    report.top_losses = rows
    raw = paths.raw_dir(cfg.comp)
    images = [thumbnail(raw / image) if image else None for image in rows["image"]]
    path = artifacts.save_figure(out.report_png("top_losses"), plots.top_losses(rows, images))
    report.written.append(path)
    note = "" if all(i is not None for i in images) else _note(f"some images are not under {raw}")
    return _img(path, "top losses") + note + _table(rows.drop(columns=["image"]), 3)


def gradcam_section(cfg: Config, out: paths.Paths, oof: tuple | None, report: Report) -> str:
    """Grad-CAM overlays (true and predicted class) for the worst OOF rows and a few correct ones."""
    from pipeline.reporting import gradcam

    if oof is None:
        return _note(f"no {out.oof_all.name} yet: run `make ensemble`")
    rows = gradcam.pick_rows(oof[0], oof[1], oof[2], cfg.data.classes, cfg.data.task)
    try:
        images, true_maps, pred_maps = gradcam.explain_rows(cfg, rows, torch.device("cpu"))
    except gradcam.Unsupported as exc:
        return _note(f"Grad-CAM is not supported for {cfg.model.name}: {exc}")
    except UserError as exc:
        return _note(f"no Grad-CAM: {exc}")
    report.gradcam = rows
    path = artifacts.save_figure(out.report_png("gradcam"), plots.gradcam(rows, images, true_maps, pred_maps))
    report.written.append(path)
    explain = "red: where the last feature stage's evidence for that class is strongest (Grad-CAM)"
    return _img(path, "Grad-CAM") + _note(explain)


def tta_section(cfg: Config, out: paths.Paths, oof: tuple | None, report: Report) -> str:
    if oof is None:
        return _note(f"no {out.oof_all.name} yet: run `make ensemble`")
    folds, targets, blended = oof
    by_view = view_scores.read_view_oof(cfg, folds)
    used = effective_views(cfg, before_choice=list(AUTO_CANDIDATES))
    unmeasured = sorted(set(used) - set(by_view or {}))
    if by_view is not None and unmeasured:  # tta.views changed since the views were measured
        log.info("report: view(s) %s not measured yet; `make report TTA=1` measures them", ", ".join(unmeasured))
        by_view = None
    if by_view is not None:
        gains = view_scores.view_gains(targets, by_view, used, cfg.metric)
        how = "each view alone, measured on the OOF rows (fold<k>/oof_by_view.csv)"
    else:
        plain = view_scores.read_plain_oof(cfg, folds)
        if plain is None:
            return _note("no fold<k>/oof_plain.csv from train: re-run with `make report TTA=1` to measure the views")
        gains = view_scores.blend_gain(targets, plain, blended, used, cfg.metric)
        how = "no TTA (train's oof_plain.csv) against the configured blend; `make report TTA=1` measures each view"
    report.tta = gains
    path = artifacts.save_figure(out.report_png("tta"), plots.tta_views(gains, cfg.metric))
    report.written.append(path)
    explain = ("gain = improvement in the metric (positive is better); gain_in_blend = blend with the view minus "
               "blend without it")  # fmt: skip
    return _note(how) + _img(path, "TTA views") + _table(gains) + _note(explain)


def lr_find_section(out: paths.Paths) -> str:
    if not out.lr_find_png.exists():
        return _note("no lr_find.png: `make lr-find` draws one")
    return _img(out.lr_find_png, "learning-rate finder")


def plan_section(cfg: Config, out: paths.Paths, args: argparse.Namespace, report: Report) -> str:
    try:
        plan = planner.plan_from_args(args, cfg)
    except UserError as exc:
        return _note(f"no time plan: {exc}")
    report.plan = plan
    for warning in plan.warnings:
        log.warning("%s", warning)
    path = artifacts.save_figure(out.report_png("plan"), plots.time_plan(plan.table, plan.limit_s, planner.MARGIN))
    report.written.append(path)
    warnings = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in plan.warnings)
    return warnings + _img(path, "time plan") + f"<pre>{html.escape(planner.format_plan(plan))}</pre>"


def build_report(cfg: Config, args: argparse.Namespace) -> Report:
    """Draw every plot (each written atomically) and collect the sections; report.html is written by `run`."""
    out = paths.for_config(cfg)
    if not out.run.is_dir():
        raise UserError(f"{out.run} not found; run `make train CONFIG=...` first")
    report = Report()
    oof = read_oof(cfg, out)
    report.sections = [
        ("Cross-validation", cv_section(cfg, out, report)),
        ("Learning curves", curves_section(cfg, out, report)),
        ("Learning-rate finder", lr_find_section(out)),
        ("Confusion (out-of-fold)", confusion_section(cfg, out, oof, report)),
        ("Per-class recall (folds and ensemble)", recall_section(cfg, out, oof, report)),
        (f"Top {TOP_LOSSES} losses (out-of-fold)", top_losses_section(cfg, out, oof, report)),
        ("Grad-CAM (out-of-fold)", gradcam_section(cfg, out, oof, report)),
        ("TTA views", tta_section(cfg, out, oof, report)),
        ("Kaggle Kernel time plan", plan_section(cfg, out, args, report)),
    ]
    return report


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;margin:.5em 0;font-size:90%}
td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}th{background:#f5f5f5}
.note{color:#666}.warning{color:#a00;font-weight:bold}pre{background:#f7f7f7;padding:.7em;overflow-x:auto}"""


def render(cfg: Config, report: Report) -> str:
    scores = report.scores or {}
    facts = [f"model {cfg.model.name}", f"{cfg.folds.n_folds} folds", f"metric {cfg.metric}",
             "TTA " + "+".join(effective_views(cfg, before_choice=["auto, not chosen yet"]))]  # fmt: skip
    if scores.get("cv") is not None:
        facts.insert(0, f"CV {scores['cv']:.4f}")
    if scores.get("git_commit"):
        facts.append(f"git {scores['git_commit']}")
    facts.append("generated " + dt.datetime.now().isoformat(timespec="seconds"))
    title = f"{cfg.comp} / {paths.for_config(cfg).run.name}"
    toc = " · ".join(f'<a href="#s{i}">{html.escape(name)}</a>' for i, (name, _) in enumerate(report.sections))
    body = "".join(
        f'<h2 id="s{i}">{html.escape(name)}</h2>\n{part}\n' for i, (name, part) in enumerate(report.sections)
    )
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>{html.escape(' · '.join(facts))}</p>\n<p>{toc}</p>\n{body}</body></html>\n")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    cfg = config_of_run(args)  # what the run trained (SET included), unless SET is given now
    out = paths.for_config(cfg)
    if getattr(args, "tta", None):
        view_scores.compute_view_oof(cfg, view_scores.views_to_measure(cfg, args.tta))
    report = build_report(cfg, args)
    artifacts.write_text(out.report_html, render(cfg, report))  # the stage's output: last
    log.info("report: %s (%d plots)", out.report_html, len(report.written))
