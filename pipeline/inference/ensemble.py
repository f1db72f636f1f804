"""ensemble: blend the folds of one experiment and score them.

Reads fold<k>/oof.csv and fold<k>/test.csv of every fold, and folds.csv; writes, under
data/runs/<comp>/<exp>/: oof.csv (every training row once, in folds.csv order), test.csv (the mean of
the folds' test probabilities) and, last, scores.json: `metric`, `cv` (the metric over all OOF rows),
`folds` (per-fold scores), `higher_is_better`, `holdout` (when data.holdout gives test labels), and the
seed, config, git commit and package versions that produced them. Before scores.json it writes
thresholds.json: per-label thresholds (multi-label) or cut points on the expected class (ordinal) fitted
on all OOF rows with the competition metric (pipeline.training.thresholds.fit_thresholds), kept only when they beat
0.5/argmax there, else {"kind": "none"}; scores.json then also holds `cv_thresholded` and
`holdout_thresholded` (optimistic for the CV: fitted on the rows it scores). With ensemble.refit the full-data
refit's refit/test.csv (make refit) joins test.csv as one more model, weight 1/(n_folds+1); it has no OOF, so `cv`
and `folds` score the folds alone, and scores.json's `refit` says so with the weights.
With a seed bag (train.seeds) the fold files already hold the members' mean; scores.json's `seeds` lists them and
`seed_bag` scores each seed's OOF alone beside the bag (`gain`, `helped`; pipeline.inference.seed_bag).
With tta.views auto it first chooses the views on the per-view OOF (pipeline.inference.tta_auto), rewrites each
fold's oof.csv/test.csv as their mean and records them in tta_views.json, so every later reader (bundle, Kernel,
report, planner) sees the views actually used.

A partial run (`--folds 0,2`, or the notebook API after `exp.train(folds=[0])`) blends only the named folds: the CV
covers only their OOF rows, the test blend (and so the submission) is their mean, and scores.json says so
(`folds_used`, `cv_rows`, `partial: true`). Without `--folds`, a fold without predictions stops the stage with one
`error:` line naming it.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import artifacts, paths
from pipeline.core.bag import bag_seeds
from pipeline.core.cli import config_from_args
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.core.metrics import higher_is_better, is_better, score
from pipeline.core.provenance import git_commit, package_versions
from pipeline.data import soft_targets
from pipeline.data.tables import encode_targets, read_csv
from pipeline.inference import prior_shift, tta_auto
from pipeline.inference.fold_check import ensemble_vs_folds, holdout_targets
from pipeline.inference.predictions import read_probs
from pipeline.inference.seed_bag import seed_bag_facts
from pipeline.inference.thresholds import fit_thresholds, hard_probs
from pipeline.training import averaging, refit
from pipeline.training.fold import read_folds

log = logging.getLogger(__name__)


def folds_to_blend(args: argparse.Namespace, cfg: Config) -> tuple[list[int], bool]:
    """(the folds to blend, whether that is a subset the user asked for); every fold must have its predictions."""
    out = paths.for_config(cfg)
    everything = list(range(cfg.folds.n_folds))
    raw = getattr(args, "folds", None) or (str(args.fold) if getattr(args, "fold", None) is not None else "")
    chosen = everything
    if raw:
        try:
            chosen = sorted({int(part) for part in raw.replace(",", " ").split()})
        except ValueError:
            chosen = []
        if not chosen or not set(chosen) <= set(everything):
            raise UserError(f"--folds {raw!r}: give fold numbers among 0..{cfg.folds.n_folds - 1}, e.g. --folds 0,1")
    missing = [k for k in chosen if not out.oof(k).exists() or not out.test_probs(k).exists()]
    if missing:
        hint = "" if raw else (" or blend only the finished folds with `--folds` (API: exp.train(folds=[...]));"
                               " the CV then covers only their rows")  # fmt: skip
        raise UserError(f"ensemble: fold(s) {missing} have no predictions ({out.oof(missing[0])}); run "
                        f"`make train predict` for them{hint}")  # fmt: skip
    return chosen, chosen != everything


def choose_auto_views(cfg: Config, fold_ids: list[int]) -> dict[str, Any]:
    """tta.views: auto: the folds' per-view OOF -> the chosen views and their nested-CV gain
    (pipeline.inference.tta_auto)."""
    out = paths.for_config(cfg)
    folds = read_folds(out)
    folds = folds[folds["fold"].isin(fold_ids)].reset_index(drop=True)
    parts = [read_csv(out.oof_by_view(k), "per-view OOF").astype({c: float for c in cfg.data.classes})
             for k in fold_ids]  # fmt: skip
    views = tta_auto.by_view(pd.concat(parts, ignore_index=True), cfg.data.classes, list(folds["id"]))
    views = {view: views[view] for view in tta_auto.candidates(list(views))}  # a report may have measured more
    choice = tta_auto.choose_views(views, encode_targets(folds["label"], cfg.data), folds["fold"].to_numpy(),
                                   cfg.metric)  # fmt: skip
    note = "; no gain, so no TTA" if choice["fell_back_to_identity"] else ""
    log.info("ensemble: tta.views auto chose %s (nested CV %.4f vs identity %.4f)%s", "+".join(choice["chosen"]),
             choice["nested_cv"], choice["identity_cv"], note)  # fmt: skip
    return choice


def apply_auto_views(cfg: Config, views: list[str], fold_ids: list[int]) -> None:
    """Rewrite every fold's oof.csv/test.csv as the mean of the chosen views, then record the choice: from here on
    the fold files hold the views tta_auto.effective_views names (the bundle ships them, the Kernel predicts them)."""
    out = paths.for_config(cfg)
    floats = {c: float for c in cfg.data.classes}
    for fold in fold_ids:
        for source, target in ((out.oof_by_view(fold), out.oof(fold)), (out.test_by_view(fold), out.test_probs(fold))):
            table = read_csv(source, "per-view probabilities").astype(floats)
            artifacts.write_csv(target, tta_auto.mean_of_views(table, views, cfg.data.classes))
    tta_auto.write_choice(cfg, views)


def check_one_code_version(cfg: Config, fold_ids: list[int]) -> None:
    """Folds predicted by different pipeline code (predict.json's `code`) are not blended silently: an upgrade between
    two folds' predict runs could change TTA, preprocessing or the output activation for some folds only."""
    out = paths.for_config(cfg)
    seen: dict[str, list[int]] = {}
    for k in fold_ids:
        marker = out.predict_marker(k)
        code = artifacts.read_json(marker).get("code", "unrecorded") if marker.exists() else "unrecorded"
        seen.setdefault(str(code), []).append(k)
    if len(seen) > 1:
        mix = "; ".join(f"fold(s) {', '.join(map(str, ks))} by {code}" for code, ks in seen.items())
        redo = f"python -m pipeline predict --config configs/{cfg.comp}/{cfg.exp}.yaml"
        raise UserError(f"{out.run}: folds were predicted by different pipeline versions ({mix}); `{redo}` "
                        "re-predicts the older ones with this version")  # fmt: skip


def read_folds_predictions(cfg: Config, fold_ids: list[int]) -> tuple[pd.DataFrame, list[pd.DataFrame], list[float]]:
    """(oof over the folds' rows in folds.csv order, each fold's test probabilities, per-fold scores at argmax)."""
    out = paths.for_config(cfg)
    classes = cfg.data.classes
    folds = read_folds(out)
    folds = folds[folds["fold"].isin(fold_ids)]
    oofs, tests, fold_scores = [], [], []
    for fold in fold_ids:
        oof, test = read_probs(out.oof(fold), classes), read_probs(out.test_probs(fold), classes)
        rows = folds[folds["fold"] == fold]
        if list(oof["id"]) != list(rows["id"]):
            raise UserError(f"{out.oof(fold)}: ids differ from fold {fold} of {out.folds_csv}; re-run predict")
        fold_scores.append(score(cfg.metric, encode_targets(rows["label"], cfg.data), oof[classes].to_numpy()))
        oofs.append(oof)
        tests.append(test)
    oof_all = pd.concat(oofs).set_index("id").loc[folds["id"]].reset_index()
    for fold, test in zip(fold_ids[1:], tests[1:], strict=True):
        if list(test["id"]) != list(tests[0]["id"]):
            raise UserError(f"{out.test_probs(fold)}: test ids differ from fold {fold_ids[0]}'s; re-run predict")
    return oof_all, tests, fold_scores


def average_tests(tests: list[pd.DataFrame], classes: list[str], thresholds: dict[str, Any] | None) -> pd.DataFrame:
    """The folds' test probabilities averaged in the decision's space (pipeline.inference.prior_shift.average_folds)."""
    blended = tests[0][["id"]].copy()
    blended[classes] = prior_shift.average_folds([t[classes].to_numpy() for t in tests], thresholds)
    return blended


def add_refit(cfg: Config, blended: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """ensemble.refit: the refit's test probabilities join the folds' mean as one more model (weight 1/(k+1));
    returns (test probabilities, what scores.json records about the refit)."""
    if not cfg.ensemble.refit:
        return blended, {"included": False}
    out, classes = paths.for_config(cfg), cfg.data.classes
    path = out.test_probs(refit.REFIT)
    if not path.exists():
        raise UserError(f"{path} not found but ensemble.refit is true; run `make refit CONFIG=...` first, "
                        "or set ensemble.refit: false")  # fmt: skip
    if cfg.tta.views == "auto":  # the refit's file holds identity until the folds' choice is applied to it
        by_view = read_csv(out.test_by_view(refit.REFIT), "per-view probabilities").astype({c: float for c in classes})
        test = tta_auto.mean_of_views(by_view, tta_auto.effective_views(cfg), classes)
    else:
        test = read_probs(path, classes)
    if list(test["id"]) != list(blended["id"]):
        raise UserError(f"{path}: test ids differ from the folds'; re-run `make refit CONFIG=...`")
    weight = 1.0 / (cfg.folds.n_folds + 1)
    mixed = blended[["id"]].copy()
    mixed[classes] = (1 - weight) * blended[classes].to_numpy() + weight * test[classes].to_numpy()
    plan = refit.refit_plan(cfg)
    facts = {
        "included": True,
        "weight": weight,
        "fold_weight": (1 - weight) / cfg.folds.n_folds,
        "weighting": "equal: the refit counts as one more model beside the folds",
        "epochs": plan["epochs"],
        "epochs_rule": plan["rule"],
        "fold_epochs": plan["fold_epochs"],
        "oof": "none: the refit trained on every row, so cv/folds score the folds alone; holdout scores the mix",
    }
    log.info("ensemble: refit included with weight %.3f (trained %d epochs; no OOF)", weight, plan["epochs"])
    return mixed, facts


def holdout_score(cfg: Config, truth: np.ndarray | None, blended: pd.DataFrame,
                  thresholds: dict[str, Any] | None = None) -> float | None:  # fmt: skip
    """Score against the held-out labels `truth` (holdout_targets, in `blended`'s row order; None: the competition
    has none) under the decision `thresholds`."""
    if truth is None:
        return None
    return score(cfg.metric, truth, prior_shift.decide(blended[cfg.data.classes].to_numpy(), thresholds))


def choose_thresholds(cfg: Config, targets: np.ndarray, probs: np.ndarray, cv: float,
                      fold_of_row: np.ndarray) -> tuple[dict[str, Any], float]:  # fmt: skip
    """The decision fitted on OOF rows, and the CV under it. Single-label with a metric that weights classes equally:
    per-class logit offsets kept only when nested CV improves (pipeline.inference.prior_shift); multi-label /
    ordinal: thresholds / cut points fitted on all OOF rows, kept only when they beat 0.5/argmax there."""
    if cfg.data.task == "single_label":
        shifted = prior_shift.choose_offsets(cfg.metric, cfg.data.task, targets, probs, fold_of_row)
        fitted_cv = score(cfg.metric, targets, prior_shift.decide(probs, shifted))
        return shifted, fitted_cv if shifted["kind"] != "none" else cv
    fitted = fit_thresholds(cfg.data.task, cfg.metric, targets, probs)
    if fitted["kind"] == "none":
        return fitted, cv
    fitted_cv = score(cfg.metric, targets, hard_probs(probs, fitted))
    if is_better(cfg.metric, fitted_cv, cv):
        return fitted, fitted_cv
    return {"kind": "none", "note": f"fitted {fitted['kind']} thresholds did not beat 0.5/argmax on OOF"}, cv


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    fold_ids, partial = folds_to_blend(args, cfg)
    check_one_code_version(cfg, fold_ids)
    auto = choose_auto_views(cfg, fold_ids) if cfg.tta.views == "auto" else None
    if auto:
        apply_auto_views(cfg, auto["chosen"], fold_ids)
    oof, tests, fold_scores = read_folds_predictions(cfg, fold_ids)
    folds = read_folds(out)
    folds = folds[folds["fold"].isin(fold_ids)]
    targets, probs = encode_targets(folds["label"], cfg.data), oof[cfg.data.classes].to_numpy()
    cv = score(cfg.metric, targets, probs)
    thresholds, cv_thresholded = choose_thresholds(cfg, targets, probs, cv, folds["fold"].to_numpy())
    blended, refit_facts = add_refit(cfg, average_tests(tests, cfg.data.classes, thresholds))
    truth = holdout_targets(cfg, blended["id"])  # read once; blended keeps tests[0]'s row order
    check = ensemble_vs_folds(cfg.metric, targets, probs, folds["fold"].to_numpy(), thresholds, None if truth is None
                              else (truth, [t[cfg.data.classes].to_numpy() for t in tests],
                                    blended[cfg.data.classes].to_numpy()))  # fmt: skip
    scores = {
        "metric": cfg.metric,
        "cv": cv,  # at 0.5 (multi-label) / argmax
        "cv_thresholded": cv_thresholded,  # with thresholds.json (fitted on these same OOF rows: optimistic)
        "thresholds": thresholds["kind"],  # prior_shift: per-class logit offsets (thresholds.json: nested CV, gain)
        "fold_average": "log-probabilities" if thresholds["kind"] == "prior_shift" else "probabilities",
        "ensemble_vs_folds": check,  # the blend (or pooled OOF) against its mean fold, under the decision
        "folds": fold_scores,  # of folds_used, in that order
        "folds_used": fold_ids,
        "partial": partial,  # True: only folds_used were blended; cv covers only their rows
        "cv_rows": len(folds),
        "higher_is_better": higher_is_better(cfg.metric),
        "holdout": holdout_score(cfg, truth, blended),
        "holdout_thresholded": holdout_score(cfg, truth, blended, thresholds),
        "n_folds": cfg.folds.n_folds,
        "refit": refit_facts,  # make refit: no OOF; how its test predictions were weighted (ensemble.refit)
        "oof_selection": averaging.oof_selection(cfg),  # keep last/best; what choosing epochs on the scored fold gained
        "tta_views": tta_auto.effective_views(cfg),
        "tta_auto": auto,
        "model": cfg.model.name,
        "seed": cfg.train.seed,
        "seeds": bag_seeds(cfg),  # a seed bag (train.seeds): each fold's files are the mean of these seeds' models
        "seed_bag": seed_bag_facts(cfg, folds, fold_ids, cv),  # each seed's own CV beside the bag's: did it help
        "folds_seed": cfg.folds.seed,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "sample": cfg.sample,
        "folds_digest": artifacts.file_digest(
            out.folds_csv
        ),  # a later pseudo-label / distillation run checks its folds match
        **soft_targets.scores_facts(cfg),  # train.pseudo / train.soft_labels: source, rows, settings, cv_note
    }
    artifacts.write_csv(out.oof_all, oof)
    artifacts.write_csv(out.test_blend, blended)
    artifacts.write_json(out.thresholds, thresholds)  # submission applies them
    artifacts.write_json(out.scores, scores)  # the stage's output: last
    spread = f" (folds {min(fold_scores):.4f}..{max(fold_scores):.4f})"
    if partial:
        spread += f"; PARTIAL: folds {fold_ids} only, {len(folds)} of {len(read_folds(out))} OOF rows"
    log.info("ensemble: CV %s = %.4f%s -> %s", cfg.metric, cv, spread, out.scores)
    if "cv_note" in scores:
        log.warning("ensemble: %s", scores["cv_note"])
    if thresholds["kind"] == "prior_shift":
        log.info("ensemble: per-class logit offsets fitted on OOF: CV %.4f (nested CV %.4f vs argmax %.4f) -> %s",
                 cv_thresholded, thresholds["nested_cv"], thresholds["argmax_cv"], out.thresholds)  # fmt: skip
    elif thresholds["kind"] != "none":
        log.info("ensemble: with %s thresholds fitted on OOF: CV %.4f -> %s", thresholds["kind"], cv_thresholded,
                 out.thresholds)  # fmt: skip
    if check["worse"]:
        where = "held-out" if check["holdout"] else "OOF"
        judged = check["holdout"] or check["oof"]
        log.warning("ensemble: the blend scores %.4f on %s rows, below its mean fold %.4f (%s): averaging the folds "
                    "hurt", judged["ensemble"], where, judged["mean_fold"], cfg.metric)  # fmt: skip
