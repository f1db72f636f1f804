"""blend: combine several experiments of one competition on their OOF predictions.

Reads configs/<comp>/blend.yaml (`name`, `experiments`, `method`: mean | geometric | rank | fitted | greedy),
each experiment's data/runs/<comp>/<exp>/oof.csv, test.csv and fold<k>/oof.csv, and folds.csv; writes
data/runs/<comp>/blend/<name>/oof.csv, test.csv and scores.json (last), then submissions/<comp>/<name>.csv.

- fitted: non-negative weights summing to 1 that minimise the log loss of the blended probabilities, a smooth
  proxy, so the search moves even when the competition metric is a step function such as accuracy;
- greedy: Caruana's ensemble selection with replacement on the competition metric itself (any metric).
Fitted and greedy weights are scored honestly: for every fold they are fitted on the other folds' OOF rows and
scored on the held-out fold (nested CV). The guard then never loses to a member: it keeps the fit only when its
nested CV beats both the plain mean and the best single experiment, else the mean when that beats the best
single, else the best single experiment alone. scores.json's `chosen` and `reason` say which and why; `weights`
(full precision), `combine` and `members` say exactly how to redo it, and `member_files` (digests of each member's
oof.csv/test.csv) tell whether it is still current. For single-label data scored by a metric that weights classes
equally, per-class logit offsets are fitted on the blend's OOF (pipeline.inference.prior_shift, kept only when nested
CV improves): scores.json's `decision` and `cv_decided`; the submission, and a Kernel, apply them. The blending
itself is pipeline.inference.blend_apply, which a Kaggle Kernel running the blend's bundle (make kaggle-bundle
BLEND=<name>) calls too.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from pipeline.core import artifacts, paths
from pipeline.core.config import BLEND_METHODS, Config, load_config
from pipeline.core.errors import UserError
from pipeline.core.metrics import goodness, higher_is_better, is_better, score
from pipeline.data.tables import encode_targets, read_csv
from pipeline.inference import blend_apply, prior_shift
from pipeline.inference.blend_apply import BlendConfig, check_name_free, combine, load_blend_config
from pipeline.inference.blend_apply import normalise as _normalise
from pipeline.inference.predictions import submission_frame

log = logging.getLogger(__name__)

METHODS = BLEND_METHODS
GREEDY_ROUNDS = 25  # ensemble-selection steps (members may be picked again: weights are multiples of 1/rounds)


def fit_weights(stack: np.ndarray, targets: np.ndarray, metric: str, task: str) -> np.ndarray:
    """Non-negative weights summing to 1 minimising the blend's log loss (softmax-parametrised, L-BFGS).

    The log loss is the smooth proxy for every metric: a step-function metric (accuracy) gives the search no slope.
    `metric` is unused here; it keeps the signature of the other weight fitters.
    """
    del metric

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        return score("log_loss", targets, _normalise(combine(stack, w, "mean"), task))

    best = minimize(loss, np.zeros(len(stack)), method="L-BFGS-B")
    w = np.exp(best.x - best.x.max())
    return w / w.sum()


def greedy_weights(stack: np.ndarray, targets: np.ndarray, metric: str, task: str) -> np.ndarray:
    """Caruana et al.'s ensemble selection with replacement on `metric`: start from the best member, add the member
    that most improves the running mean, GREEDY_ROUNDS times; keep the best prefix. Weights = pick counts."""
    counts = np.zeros(len(stack))
    best_counts, best_value = counts, None
    for _ in range(GREEDY_ROUNDS):
        values = []
        for j in range(len(stack)):
            trial = counts.copy()
            trial[j] += 1
            values.append(score(metric, targets, _normalise(combine(stack, trial / trial.sum(), "mean"), task)))
        j = max(range(len(stack)), key=lambda i: goodness(metric, values[i]))
        counts = counts.copy()
        counts[j] += 1
        if best_value is None or is_better(metric, values[j], best_value):
            best_counts, best_value = counts, values[j]
    return best_counts / best_counts.sum()


FITTERS = ("fitted", "greedy")


def fitter(method: str) -> Callable[[np.ndarray, np.ndarray, str, str], np.ndarray]:
    return fit_weights if method == "fitted" else greedy_weights


@dataclass
class Experiment:
    name: str
    oof: np.ndarray
    test: np.ndarray
    fold_ids: list[frozenset]
    cv: float


def load_experiment(cfg: Config, name: str, folds: pd.DataFrame, test_ids: list[str] | None) -> Experiment:
    out = paths.Paths(cfg.comp, name)
    oof_path, test_path = out.oof_all, out.test_blend
    for path in (oof_path, test_path):
        if not path.exists():
            raise UserError(f"{path} not found; run `make ensemble CONFIG=configs/{cfg.comp}/{name}.yaml` first")
    oof, test = read_csv(oof_path, "oof"), read_csv(test_path, "test probabilities")
    if list(oof["id"]) != list(folds["id"]):
        raise UserError(f"{oof_path}: its rows are not folds.csv's ids; experiments must share one folds.csv to blend")
    if test_ids is not None and list(test["id"]) != test_ids:
        raise UserError(
            f"{test_path}: test ids differ from the first experiment's; re-run predict on the same test set"
        )
    fold_ids = []
    for k in sorted(folds["fold"].unique()):
        part = out.oof(int(k))
        fold_ids.append(frozenset(read_csv(part, "fold oof")["id"]) if part.exists() else frozenset())
    targets = encode_targets(folds["label"], cfg.data)
    probs = oof[cfg.data.classes].astype(float).to_numpy()
    return Experiment(name, probs, test[cfg.data.classes].astype(float).to_numpy(), fold_ids,
                      score(cfg.metric, targets, probs))  # fmt: skip


def nested_fitted(
    stack: np.ndarray, targets: np.ndarray, fold: np.ndarray, metric: str, task: str, method: str = "fitted"
) -> tuple[float, list]:
    """Fit on k-1 folds, predict the held-out fold, for every fold; score the assembled out-of-fold blend."""
    blended = np.zeros(stack.shape[1:])
    per_fold = []
    for k in np.unique(fold):
        held = fold == k
        w = fitter(method)(stack[:, ~held], targets[~held], metric, task)
        blended[held] = _normalise(combine(stack[:, held], w, "mean"), task)
        per_fold.append(w.round(4).tolist())
    return score(metric, targets, blended), per_fold


def choose_blend(
    blend: BlendConfig, experiments: list[Experiment], stack: np.ndarray, targets: np.ndarray, fold: np.ndarray,
    cfg: Config,
) -> tuple[dict, str, np.ndarray]:  # fmt: skip
    """(scores.json facts, combine method, weights): the fit, the plain blend or the best single experiment,
    whichever the guard keeps (see the module docstring)."""
    metric, task = cfg.metric, cfg.data.task
    n = len(experiments)
    equal = np.full(n, 1.0 / n)
    plain = "mean" if blend.method in FITTERS else blend.method
    mean_cv = score(metric, targets, _normalise(combine(stack, equal, plain), task))
    best_i = max(range(n), key=lambda i: goodness(metric, experiments[i].cv))
    best = experiments[best_i]
    result: dict = {"metric": metric, "higher_is_better": higher_is_better(metric),
                    "experiments": {e.name: e.cv for e in experiments},
                    "best_single": {"experiment": best.name, "cv": best.cv}, "mean_cv": mean_cv,
                    "method": blend.method}  # fmt: skip
    candidates = {plain: mean_cv, "best_single": best.cv}
    chosen, reason = plain, f"the {plain} of all experiments beats the best single experiment"
    if blend.method in FITTERS:
        nested, per_fold = nested_fitted(stack, targets, fold, metric, task, blend.method)
        result.update(nested_cv=nested, nested_fold_weights=per_fold)
        candidates[blend.method] = nested
        fitted = fitter(blend.method)(
            stack, targets, metric, task
        )  # on every row: the weights, if the guard keeps them
        result["fitted_weights"] = dict(zip([e.name for e in experiments], fitted.round(6).tolist(), strict=True))
        if is_better(metric, nested, mean_cv) and is_better(metric, nested, best.cv):
            chosen, reason = blend.method, f"{blend.method} weights beat the mean and the best single under nested CV"
    if chosen == plain and not is_better(metric, mean_cv, best.cv):
        chosen = "best_single"
        reason = f"neither the fit nor the {plain} beats the best single experiment {best.name}; using it alone"
    elif chosen == plain and blend.method in FITTERS:
        reason = f"{blend.method} weights did not beat the mean under nested CV; the mean beats the best single"
    if chosen != blend.method:
        log.warning("blend: %s", reason)
    weights = {"best_single": np.eye(n)[best_i], plain: equal}.get(chosen)
    if weights is None:
        weights = fitted
    result.update(candidates=candidates, chosen=chosen, reason=reason)
    return result, "mean" if chosen in (*FITTERS, "best_single") else plain, weights


def run(args: argparse.Namespace) -> None:
    comp = args.comp or (args.config and Path(args.config).resolve().parent.name)
    if not comp:
        raise UserError("blend: COMP=<competition slug> is required")
    blend_path = Path(args.config) if args.config and args.config.endswith("blend.yaml") else paths.blend_config(comp)
    blend = load_blend_config(blend_path)
    check_name_free(comp, blend.name, blend_path)
    cfg = load_config(paths.configs_dir(comp) / "competition.yaml", args.overrides)
    out = paths.Paths(comp)
    folds = read_csv(out.folds_csv, "folds table").astype({"fold": int})
    targets = encode_targets(folds["label"], cfg.data)
    experiments: list[Experiment] = []
    test_ids: list[str] = []
    for name in blend.experiments:
        experiments.append(load_experiment(cfg, name, folds, None if not experiments else test_ids))
        test_ids = list(read_csv(paths.Paths(comp, name).test_blend, "test probabilities")["id"])
        if experiments[-1].fold_ids != experiments[0].fold_ids:
            raise UserError(f"{name} and {experiments[0].name} were trained on different folds; they cannot be blended")
    stack = np.stack([e.oof for e in experiments])
    result, method, weights = choose_blend(blend, experiments, stack, targets, folds["fold"].to_numpy(), cfg)
    best, mean_cv = result["best_single"], result["mean_cv"]
    oof_blend = blend_apply.apply(stack, weights, method, cfg.data.task)
    tests = [read_csv(paths.Paths(comp, name).test_blend, "test probabilities") for name in blend.experiments]
    test_frame = blend_apply.blend_tables(tests, blend.experiments, weights, method, cfg)  # what a Kernel bundle redoes
    # weights at full precision and the combine method: a Kaggle Kernel bundle (kaggle-bundle --blend) blends with
    # exactly these; member_files: the digests that tell whether this scores.json still describes the members
    result.update(weights=dict(zip(blend.experiments, weights.tolist(), strict=True)), members=blend.experiments,
                  combine=method, member_files=blend_apply.member_files(comp, blend.experiments),
                  cv=score(cfg.metric, targets, oof_blend), sample=0,
                  folds_digest=artifacts.file_digest(out.folds_csv))  # fmt: skip
    # per-class logit offsets on the blend's own OOF (nested CV decides), applied to its submission and in the Kernel
    decision = prior_shift.choose_offsets(cfg.metric, cfg.data.task, targets, oof_blend, folds["fold"].to_numpy())
    result.update(decision=decision, cv_decided=score(cfg.metric, targets, prior_shift.decide(oof_blend, decision)))
    oof_frame = pd.DataFrame(oof_blend, columns=cfg.data.classes)
    oof_frame.insert(0, "id", folds["id"].to_numpy())
    submission = paths.Paths(comp, blend.name).submission
    formatted = submission_frame(cfg, test_frame, submission, decision, require_sample=False)
    artifacts.write_csv(out.blend_oof(blend.name), oof_frame)
    artifacts.write_csv(out.blend_test(blend.name), test_frame)
    artifacts.write_json(out.blend_scores(blend.name), result)
    artifacts.write_csv(submission, formatted)
    honest = f", nested {result['nested_cv']:.4f}" if "nested_cv" in result else ""
    print(f"blend {blend.name}: {result['chosen']}: CV {cfg.metric} {result['cv']:.4f}{honest} (mean "
          f"{mean_cv:.4f}, best single {best['experiment']} {best['cv']:.4f}); weights {result['weights']} "
          f"-> {submission}")  # fmt: skip
