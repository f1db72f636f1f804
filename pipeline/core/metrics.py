"""Competition metrics by name, computed from probabilities (sklearn wherever it has the metric).

Every metric takes `targets` (int class indices, shape (n,), or a 0/1 matrix (n, C) for multi-label)
and `probs` (n, C) and returns a float. Multi-label predictions are thresholded at `threshold`.

A metric "as configured" is one string (config.metric), passed around by every stage:
- a plain name from METRICS (accuracy, log_loss, balanced_accuracy, ...);
- a parametrised one: `map@5` (mean average precision at k), `top_k_accuracy@3`, `fbeta_macro@2`
  (`fbeta_<macro|micro|samples>@<beta>`);
- a custom one: `custom(mypackage.module:score, higher_is_better=true, needs=probabilities)`, a function
  `score(targets, probs_or_labels) -> float` imported from the project folder or configs/ (or the
  competition's configs folder).
competition.yaml may also write the last two as mappings ({name: map, k: 5}, {function: ..., ...});
config.py turns them into the string with `canonical()`. `METRICS[name]` resolves every form.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, UserError


class _SklearnMetrics:
    """sklearn.metrics, imported on first use: it costs 1-2 s, and config loading (every stage start, Make's
    no-op `make all` included) needs only the metric names here, never a score."""

    def __getattr__(self, name: str) -> Any:
        from sklearn import metrics

        return getattr(metrics, name)


skm = _SklearnMetrics()


def _is_multilabel(targets: np.ndarray) -> bool:
    return targets.ndim == 2


def _hard(probs: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
    return (probs >= threshold).astype(int) if _is_multilabel(targets) else probs.argmax(axis=1)


def accuracy(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.accuracy_score(targets, _hard(probs, targets, threshold)))


def error_rate(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return 1.0 - accuracy(targets, probs, threshold)


def log_loss(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    eps = 1e-7
    if _is_multilabel(targets):  # mean binary cross-entropy over labels
        p = np.clip(probs, eps, 1 - eps)
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    p = np.clip(probs, eps, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(skm.log_loss(targets, p, labels=np.arange(probs.shape[1])))


def f1_macro(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.f1_score(targets, _hard(probs, targets, threshold), average="macro", zero_division=0))


def f1_micro(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.f1_score(targets, _hard(probs, targets, threshold), average="micro", zero_division=0))


def quadratic_weighted_kappa(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(skm.cohen_kappa_score(targets, probs.argmax(axis=1), weights="quadratic"))


def rmse(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Root mean squared error of the expected class index (sum_k k p_k) against the true index: ordinal targets."""
    expected = probs @ np.arange(probs.shape[1], dtype=np.float64)
    return float(np.sqrt(np.mean((expected - targets) ** 2)))


def roc_auc(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    if _is_multilabel(targets):  # mean over labels that have both classes present
        present = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
        return float(np.mean([skm.roc_auc_score(targets[:, j], probs[:, j]) for j in present]))
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(targets, probs[:, 1]))
    p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    return float(skm.roc_auc_score(targets, p, multi_class="ovr", labels=np.arange(probs.shape[1])))


def balanced_accuracy(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Mean recall over classes (multi-label: the mean of each label's balanced accuracy)."""
    hard = _hard(probs, targets, threshold)
    if _is_multilabel(targets):
        return float(np.mean([skm.balanced_accuracy_score(targets[:, j], hard[:, j]) for j in range(targets.shape[1])]))
    return float(skm.balanced_accuracy_score(targets, hard))


def matthews(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Matthews correlation (multi-class: sklearn's generalisation; multi-label: over all label decisions)."""
    hard = _hard(probs, targets, threshold)
    if _is_multilabel(targets):
        return float(skm.matthews_corrcoef(targets.ravel(), hard.ravel()))
    return float(skm.matthews_corrcoef(targets, hard))


def mean_columnwise_log_loss(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Multi-label: each label's binary log loss, averaged over labels (single-label: log_loss)."""
    if not _is_multilabel(targets):
        return log_loss(targets, probs, threshold)
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(np.mean([skm.log_loss(targets[:, j], p[:, j], labels=[0, 1]) for j in range(targets.shape[1])]))


def map_at_k(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5, k: int = 5) -> float:
    """Mean average precision at k over the k most probable classes (Kaggle's apk; one true class: 1/rank)."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    if _is_multilabel(targets):
        hits = np.take_along_axis(targets, top, axis=1).astype(float)
        relevant = np.minimum(targets.sum(axis=1), top.shape[1])
    else:
        hits = (top == targets[:, None]).astype(float)
        relevant = np.ones(len(targets))
    precision = np.cumsum(hits, axis=1) / np.arange(1, top.shape[1] + 1)
    return float(np.mean((precision * hits).sum(axis=1) / np.maximum(relevant, 1)))


def top_k_accuracy(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5, k: int = 5) -> float:
    scores = probs[:, 1] if probs.shape[1] == 2 else probs  # sklearn's binary case takes one score column
    return float(skm.top_k_accuracy_score(targets, scores, k=k, labels=np.arange(probs.shape[1])))


def fbeta(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5, beta: float = 1.0, average: str = "macro"):
    hard = _hard(probs, targets, threshold)
    return float(skm.fbeta_score(targets, hard, beta=beta, average=average, zero_division=0))


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., float]
    higher_is_better: bool
    hard: bool = False  # scores 0/1 decisions: per-label thresholds / ordinal cut points can be fitted for it
    tasks: tuple[str, ...] = ("single_label", "multi_label", "ordinal")  # the data.task values it can score


SINGLE = ("single_label", "ordinal")


class _Metrics(dict):
    """Name -> Metric; a parametrised or custom name (see the module docstring) is resolved on first use."""

    def __missing__(self, name: str) -> Metric:
        metric = resolve(name)
        self[name] = metric
        return metric


METRICS: dict[str, Metric] = _Metrics(
    {
        "accuracy": Metric(accuracy, True, hard=True),
        "error_rate": Metric(error_rate, False, hard=True),
        "log_loss": Metric(log_loss, False),
        "mean_columnwise_log_loss": Metric(mean_columnwise_log_loss, False),
        "f1_macro": Metric(f1_macro, True, hard=True),
        "f1_micro": Metric(f1_micro, True, hard=True),
        "quadratic_weighted_kappa": Metric(quadratic_weighted_kappa, True, hard=True),
        "roc_auc": Metric(roc_auc, True),
        "balanced_accuracy": Metric(balanced_accuracy, True, hard=True),
        "rmse": Metric(rmse, False, tasks=SINGLE),
        "matthews_corrcoef": Metric(matthews, True, hard=True),
    }
)
PARAMETRISED = {"map": "k", "top_k_accuracy": "k", "fbeta": "beta"}  # {name: its parameter}
FBETA_AVERAGES = ("macro", "micro", "samples")
_PARAM_NAME = re.compile(r"^(map|top_k_accuracy|fbeta_(macro|micro|samples))@(\S+)$")
_CUSTOM_NAME = re.compile(
    r"^custom\((?P<function>[^,()\s]+), higher_is_better=(?P<hib>true|false), needs=(?P<needs>probabilities|labels)\)$"
)
SEARCH_DIRS: list[Path] = []  # extra folders for custom metric modules (config.py adds the competition's configs)


def _parametrised(name: str) -> Metric:
    match = _PARAM_NAME.match(name)
    assert match is not None
    base, average, raw = match.group(1), match.group(2), match.group(3)
    if base.startswith("fbeta"):
        try:
            beta = float(raw)
        except ValueError:
            beta = -1.0
        if not beta > 0 or not math.isfinite(beta):
            raise ConfigError(f"metric: {name!r}: beta must be a positive number, e.g. fbeta_macro@2")
        tasks = ("multi_label",) if average == "samples" else ("single_label", "multi_label", "ordinal")
        return Metric(lambda t, p, th=0.5: fbeta(t, p, th, beta=beta, average=average), True, hard=True, tasks=tasks)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"metric: {name!r}: k must be a whole number of at least 1, e.g. {base}@5")
    k = int(raw)
    if base == "map":
        return Metric(lambda t, p, th=0.5: map_at_k(t, p, th, k=k), True)
    return Metric(lambda t, p, th=0.5: top_k_accuracy(t, p, th, k=k), True, tasks=SINGLE)


def import_function(spec: str) -> Callable[..., Any]:
    """`package.module:function`, imported from the project folder, configs/ or SEARCH_DIRS."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"metric.function: expected 'module:function' (e.g. mymetrics:score), got {spec!r}")
    for folder in [Path.cwd(), Path.cwd() / "configs", *SEARCH_DIRS]:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"metric.function: cannot import {module_name!r} ({type(exc).__name__}: {exc}); put "
            f"{module_name.replace('.', '/')}.py in the project folder or configs/"
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"metric.function: {module_name!r} has no function {attr!r}; fix metric.function")
    return fn


def _custom(name: str, spec: str, higher: bool, needs: str) -> Metric:
    fn = import_function(spec)

    def run(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
        given = probs if needs == "probabilities" else _hard(probs, targets, threshold)
        try:
            value = fn(targets, given)
        except Exception as exc:
            raise UserError(f"metric: custom function {spec} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or np.isnan(value):
            raise UserError(f"metric: custom function {spec} returned {value!r}, not a number; return a float")
        return float(value)

    return Metric(run, higher, hard=needs == "labels")


def custom_function_spec(name: str) -> str | None:
    """The `module:function` of a custom metric's canonical name, None for a built-in metric."""
    match = _CUSTOM_NAME.match(name)
    return match["function"] if match else None


def resolve(name: str) -> Metric:
    """The Metric for any configured name; ConfigError (naming `metric`) when it is unknown or malformed."""
    if not isinstance(name, str):
        raise ConfigError(f"metric: expected a name or a mapping, got {name!r}")
    if name in dict.keys(METRICS):
        return dict.__getitem__(METRICS, name)
    if _PARAM_NAME.match(name):
        return _parametrised(name)
    custom = _CUSTOM_NAME.match(name)
    if custom:
        return _custom(name, custom["function"], custom["hib"] == "true", custom["needs"])
    known = sorted([*dict.keys(METRICS), "map@K", "top_k_accuracy@K", "fbeta_<macro|micro|samples>@BETA"])
    raise ConfigError(f"metric: unknown metric {name!r}; known: {', '.join(known)}, or a custom function mapping")


def _check_keys(value: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(
            f"metric: unknown key(s) {', '.join(unknown)} for {what}; known: {', '.join(sorted(allowed))}"
        )


def canonical(value: Any) -> str:
    """competition.yaml's `metric` (a name, {name:, k:|beta:, average:} or {function:, higher_is_better:, needs:})
    -> the one string every stage passes around."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"metric: expected a name (e.g. accuracy, map@5) or a mapping, got {value!r}")
    if "function" in value:
        _check_keys(value, {"function", "higher_is_better", "needs"}, "a custom metric")
        higher, needs = value.get("higher_is_better"), value.get("needs", "probabilities")
        if not isinstance(value["function"], str):
            raise ConfigError(f"metric.function: expected 'module:function', got {value['function']!r}")
        if not isinstance(higher, bool):
            raise ConfigError(f"metric.higher_is_better: expected true or false, got {higher!r}")
        if needs not in ("probabilities", "labels"):
            raise ConfigError(f"metric.needs: expected probabilities or labels, got {needs!r}")
        return f"custom({value['function']}, higher_is_better={str(higher).lower()}, needs={needs})"
    name = value.get("name")
    if name not in PARAMETRISED:
        if isinstance(name, str) and name in dict.keys(METRICS):
            _check_keys(value, {"name"}, name)
            return name
        raise ConfigError(f"metric.name: expected one of {', '.join(PARAMETRISED)} (or a plain name), got {name!r}")
    param = PARAMETRISED[name]
    _check_keys(value, {"name", param} | ({"average"} if name == "fbeta" else set()), name)
    if param not in value:
        raise ConfigError(f"metric.{param}: missing for metric {name}; e.g. {{name: {name}, {param}: 5}}")
    if name == "fbeta":
        average = value.get("average", "macro")
        if average not in FBETA_AVERAGES:
            raise ConfigError(f"metric.average: expected one of {', '.join(FBETA_AVERAGES)}, got {average!r}")
        return f"fbeta_{average}@{value[param]}"
    return f"{name}@{value[param]}"


def check_task(name: str, task: str) -> None:
    """ConfigError when metric `name` cannot score `task` (e.g. top-k accuracy on multi-label data)."""
    tasks = METRICS[name].tasks
    if task not in tasks:
        raise ConfigError(f"metric: {name} cannot score data.task {task}; it works for {', '.join(tasks)}")


def score(name: str, targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    if not np.isfinite(probs).all():  # a diverged model: refuse rather than raise in sklearn or score garbage
        raise ValueError(f"{name}: probabilities hold NaN or infinite values; the model diverged")
    return METRICS[name].fn(targets, probs, threshold)


# One truth for "is a higher score better?": every stage that compares, sorts or picks scores calls these.
# `name` is the metric as configured (plain, parametrised or custom).
def higher_is_better(name: str) -> bool:
    return METRICS[name].higher_is_better


def is_better(name: str, new: float, old: float, margin: float = 0.0) -> bool:
    """True when `new` beats `old` by more than `margin` in the metric's own direction."""
    return new > old + margin if higher_is_better(name) else new < old - margin


def goodness(name: str, value: float) -> float:
    """`value` signed so that larger is always better: a key for max() and sort()."""
    return value if higher_is_better(name) else -value


def uses_thresholds(name: str) -> bool:
    """Whether the metric scores 0/1 decisions, so fitted thresholds / cut points can change it."""
    return METRICS[name].hard


# Metrics that weight every class equally, so a minority class counts as much as the majority: per-class logit offsets
# (pipeline.inference.prior_shift) and class-balanced training can serve them; accuracy, micro-F1 and the
# probability metrics are left alone.
EQUAL_WEIGHT = ("f1_macro", "balanced_accuracy", "matthews_corrcoef", "quadratic_weighted_kappa")


def weights_classes_equally(name: str) -> bool:
    """Whether metric `name` (as configured) weights classes equally (macro-F1, balanced accuracy, MCC, kappa,
    macro F-beta)."""
    return name in EQUAL_WEIGHT or name.startswith("fbeta_macro@")


def submission_top_k(name: str) -> int | None:
    """k for a MAP@k metric (its submission lists the k most probable classes), else None."""
    match = _PARAM_NAME.match(name)
    return int(match.group(3)) if match and match.group(1) == "map" else None
