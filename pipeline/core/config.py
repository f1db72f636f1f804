"""Typed, small and loud configuration.

Defaults live here, in code. A competition's configs/<comp>/competition.yaml holds its data layout,
metric and folds; an experiment's configs/<comp>/<exp>.yaml holds only what differs for the model,
training and TTA. Unknown keys and wrong types fail with the key's name; `key=value` overrides
(dotted keys) come from the command line (`--set`, or Make's SET="...").
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import ConfigError
from pipeline.core.schema import (  # noqa: F401 - the schema, re-exported: config is where callers import it
    ACCELERATORS,
    AUGMENT_POLICIES,
    BLEND_METHODS,
    COMPETITION_KEYS,
    EXPERIMENT_KEYS,
    LOSSES,
    RANDAUGMENT_OPS,
    SEED_MAX,
    SUBMISSION_FORMATS,
    TASKS,
    TRACKERS,
    TTA_VIEWS,
    WEIGHTS_TRAVEL,
    AugmentConfig,
    CacheConfig,
    Config,
    DataConfig,
    EnsembleConfig,
    FoldsConfig,
    KaggleConfig,
    ModelConfig,
    PseudoConfig,
    Range,
    SoftLabelsConfig,
    SwaConfig,
    TrainConfig,
    TTAConfig,
    ranged,
)


class _NotFinite(ConfigError):
    """nan or inf where a number belongs."""


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    if annotation is Any:  # free-form values (augment.custom items) are checked by their own validator
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, key)
            except _NotFinite:
                raise  # `lr: nan` is a number that cannot work, not a string that might
            except ConfigError as exc:
                errors.append(str(exc))
        names = " or ".join("null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise _NotFinite(f"{key}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # class names like 0..9 read as ints from YAML
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation} for {key}")  # a bug in this module


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build dataclass `cls` from `values`, rejecting unknown keys and wrong types by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(cls)}  # YAML key -> field name
    known = set(names)
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{section}." if section else ""
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(known))}")
    ranges = {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}
    kwargs = {}
    for yaml_key, value in values.items():
        name = names[yaml_key]
        key = f"{section}.{yaml_key}" if section else yaml_key
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_section(annotation, value if value is not None else {}, key)
        else:
            kwargs[name] = _check_type(value, annotation, key)
            if name in ranges:
                _check_range(kwargs[name], ranges[name], key)
    return cls(**kwargs)


def _check_range(value: Any, allowed: Range, key: str) -> None:
    """Numbers (or each number of a list) within the field's declared range; strings and null are not numbers."""
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if isinstance(item, (int, float)) and not isinstance(item, bool) and item not in allowed:
            where = f"{key}[{i}]" if isinstance(value, list) else key
            raise ConfigError(f"{where}: must be {allowed}, got {item!r}")


def check_ranges(obj: Any, section: str = "") -> None:
    """Every ranged field of a built config (and its sections) within its range: configs made in code, not read
    from YAML (the notebook API, sweeps), get the same one-line errors as `build_section` gives a file."""
    for f in dataclasses.fields(obj):
        key = f"{section}.{f.name}" if section else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
        elif "range" in f.metadata:
            _check_range(value, f.metadata["range"], key)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found; run `make init COMP=<slug>` or check CONFIG=") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config {path} is a folder; pass a .yaml file") from exc
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(values).__name__}")
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], "3e-4" parsed as YAML)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key=value with a dotted key, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from exc
    return key.split("."), value


def apply_override(values: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = values
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def config_paths(path: Path) -> tuple[Path, str, str]:
    """configs/<comp>/<exp>.yaml -> (competition.yaml path, comp slug, experiment name)."""
    path = Path(path)
    comp = path.resolve().parent.name
    exp = "" if path.stem == "competition" else path.stem
    return path.parent / "competition.yaml", comp, exp


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = (), check: bool = True) -> Config:
    """Merge competition.yaml (beside `path`) with the experiment yaml and overrides; keys, types and ranges are
    always checked; `check` also runs the cross-field checks (validate: metric, loss, timm choices), which `info`
    skips because Make asks it for facts several times per run."""
    path = Path(path)
    comp_path, comp, exp = config_paths(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found; run `make init COMP=<slug>` or check CONFIG=")
    competition = read_yaml(comp_path) if comp_path.exists() else {}
    misplaced = sorted(set(competition) - set(COMPETITION_KEYS))
    if misplaced:
        raise ConfigError(f"{comp_path}: unknown key(s) {', '.join(misplaced)}; known: {', '.join(COMPETITION_KEYS)}")
    values: dict[str, Any] = dict(competition)
    if exp:
        experiment = read_yaml(path)
        for key, value in experiment.items():
            if key in values and isinstance(value, dict) and isinstance(values[key], dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(values, parts, value, text)
    for key in ("comp", "exp"):
        if key in values:
            raise ConfigError(f"{path}: key {key!r} is set from the file's location, remove it")
    values["comp"], values["exp"] = comp, exp
    _custom_metric_folders(path)
    if "metric" in values:  # a mapping ({name: map, k: 5} or a custom function) becomes the metric's one string
        from pipeline.core.metrics import canonical

        values["metric"] = canonical(values["metric"])
    cfg = build_section(Config, values, "")
    if check:
        validate(cfg)
    return one_seed_as_seed(cfg)


def one_seed_as_seed(cfg: Config) -> Config:
    """train.seeds with one seed is no bag: it acts as train.seed (same folders, same fingerprint as that seed)."""
    if len(cfg.train.seeds) != 1:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seeds[0], seeds=[]))


def _custom_metric_folders(path: Path) -> None:
    """A custom metric's module may also live in the competition's configs folder or the configs folder above it."""
    from pipeline.core import metrics

    for folder in (path.resolve().parent, path.resolve().parent.parent):
        if folder not in metrics.SEARCH_DIRS:
            metrics.SEARCH_DIRS.append(folder)


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express (and the declared ranges, for configs built in code)."""
    check_ranges(cfg)
    if cfg.data.task not in TASKS:
        raise ConfigError(f"data.task: {cfg.data.task!r} is not one of {', '.join(TASKS)}")
    if cfg.data.submission_format not in SUBMISSION_FORMATS:
        raise ConfigError(
            f"data.submission_format: {cfg.data.submission_format!r} is not one of {', '.join(SUBMISSION_FORMATS)}"
        )
    if cfg.device not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device: {cfg.device!r} is not one of auto, cpu, cuda, mps")
    duplicated = sorted({name for name in cfg.data.classes if cfg.data.classes.count(name) > 1})
    if duplicated:
        raise ConfigError(f"data.classes: {duplicated} listed more than once; each class once, in a fixed order")
    validate_recipe(cfg)
    check_timm_choices(cfg.train)
    validate_loss(cfg)
    validate_augment(cfg.augment)
    if cfg.tracking not in TRACKERS:
        raise ConfigError(f"tracking: {cfg.tracking!r} is not one of {', '.join(TRACKERS)}")
    if cfg.kaggle.accelerator and cfg.kaggle.accelerator not in ACCELERATORS:
        raise ConfigError(f"kaggle.accelerator: {cfg.kaggle.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if cfg.kaggle.weights not in WEIGHTS_TRAVEL:
        raise ConfigError(f"kaggle.weights: {cfg.kaggle.weights!r} is not one of {', '.join(WEIGHTS_TRAVEL)}")
    from pipeline.core.metrics import check_task

    check_task(cfg.metric, cfg.data.task)  # an unknown or malformed metric fails here, naming `metric`
    if isinstance(cfg.tta.views, str) and cfg.tta.views != "auto":
        raise ConfigError(f"tta.views: expected a list of views or auto, got {cfg.tta.views!r}")
    for i, view in enumerate(cfg.tta.views if isinstance(cfg.tta.views, list) else []):
        if view not in TTA_VIEWS:
            raise ConfigError(f"tta.views[{i}]: unknown view {view!r}; known: {', '.join(TTA_VIEWS)}")


def validate_loss(cfg: Config) -> None:
    """ConfigError for a loss that cannot train this task/head, or a parameter out of range."""
    t, task = cfg.train, cfg.data.task
    if t.loss not in LOSSES:
        raise ConfigError(f"train.loss: {t.loss!r} is not one of {', '.join(LOSSES)}")
    if cfg.model.head == "regression" and t.loss != "auto":
        raise ConfigError(f"train.loss: a regression head trains with MSE; use train.loss: auto, not {t.loss}")
    if t.loss == "cross_entropy" and task == "multi_label":
        raise ConfigError("train.loss: cross_entropy is for single-label data; use bce, focal or asymmetric")
    if t.loss == "bce" and task != "multi_label":
        raise ConfigError(f"train.loss: bce is for multi-label data; use cross_entropy, focal or asymmetric ({task})")
    if t.loss == "logit_adjusted" and (task == "multi_label" or cfg.model.head == "regression"):
        raise ConfigError(f"train.loss: logit_adjusted is for single-label data with a classifier head ({task})")
    if t.class_weights != "none" and t.loss == "logit_adjusted":
        raise ConfigError("train.class_weights: logit_adjusted already balances the classes; use none")
    if t.class_weights != "none" and (t.loss == "asymmetric" and task != "multi_label" or
                                      t.loss == "focal" and task == "multi_label"):  # fmt: skip
        raise ConfigError(f"train.class_weights: {t.loss} loss on {task} data takes no class weights; use none")
    for key in ("focal_gamma", "asl_gamma_neg", "asl_gamma_pos"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}: must be 0 or more, got {getattr(t, key)}")
    if t.focal_alpha is not None and not 0 <= t.focal_alpha <= 1:
        raise ConfigError(f"train.focal_alpha: must be between 0 and 1, or null (off), got {t.focal_alpha}")
    if not 0 <= t.asl_clip < 1:
        raise ConfigError(f"train.asl_clip: must be in [0, 1), got {t.asl_clip}")


def validate_augment(cfg: AugmentConfig) -> None:
    """ConfigError for an unknown policy, a custom list without policy custom, or an out-of-range knob. Each custom
    transform is checked on a sample image when the policy is built (pipeline.data.augment_policies), where
    albumentations is imported."""
    if cfg.policy not in AUGMENT_POLICIES:
        raise ConfigError(f"augment.policy: {cfg.policy!r} is not one of {', '.join(AUGMENT_POLICIES)}")
    if cfg.custom and cfg.policy != "custom":
        raise ConfigError(f"augment.custom: set augment.policy: custom to use it (policy is {cfg.policy})")
    if cfg.policy == "custom" and not cfg.custom:
        raise ConfigError("augment.custom: policy custom needs a list of transforms, e.g. [CLAHE, {Affine: {p: 0.5}}]")
    if not 0 <= cfg.magnitude <= 10:
        raise ConfigError(f"augment.magnitude: must be between 0 and 10, got {cfg.magnitude}")
    if not 1 <= cfg.num_ops <= len(RANDAUGMENT_OPS):
        raise ConfigError(f"augment.num_ops: must be 1..{len(RANDAUGMENT_OPS)}, got {cfg.num_ops}")
    for key in ("erasing", "coarse_dropout"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise ConfigError(f"augment.{key}: must be a probability between 0 and 1, got {getattr(cfg, key)}")


# Names seen to work, so the common case costs no timm import (~2 s); anything else is checked against timm itself.
COMMON_OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "lamb", "lion", "rmsprop", "adan", "nadam")
COMMON_SCHEDULERS = ("cosine", "step", "multistep", "plateau", "poly", "tanh", "constant")


def timm_schedulers() -> list[str]:
    """The `sched` names timm's create_scheduler_v2 accepts (it has no list: probe each candidate name)."""
    import torch
    from timm.scheduler import create_scheduler_v2

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    names = []
    for name in (*COMMON_SCHEDULERS, "wsd", "rsqrt"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation notes about a scheduler are not the user's business here
                create_scheduler_v2(optimizer, sched=name, num_epochs=2)
            names.append(name)
        except (ValueError, TypeError):
            pass
    return names


def check_timm_choices(t: TrainConfig) -> None:
    """train.opt and train.sched against the names timm accepts, at load time rather than when training starts."""
    if t.opt.lower() not in COMMON_OPTIMIZERS:
        import timm.optim

        known = timm.optim.list_optimizers()
        if t.opt.lower() not in known and t.opt.lower().split("_")[-1] not in known:
            raise ConfigError(f"train.opt: {t.opt!r} is not a timm optimizer; known: {', '.join(known)}")
    if t.sched not in COMMON_SCHEDULERS:
        known = timm_schedulers()
        if t.sched not in known:
            raise ConfigError(f"train.sched: {t.sched!r} is not a timm scheduler; known: {', '.join(known)}")


def validate_recipe(cfg: Config) -> None:
    """The training recipe's keys: ranges, choices, and combinations that cannot work."""
    t = cfg.train
    if isinstance(t.lr, str) and t.lr != "auto":
        raise ConfigError(f"train.lr: expected a number or auto, got {t.lr!r}")
    choices = {
        "train.keep": (t.keep, ("best", "last")),
        "train.class_weights": (t.class_weights, ("none", "balanced")),
        "train.sampler": (t.sampler, ("shuffle", "balanced")),
        "model.head": (cfg.model.head, ("classifier", "regression")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    if not 0 <= t.freeze_epochs < t.epochs:
        raise ConfigError(
            f"train.freeze_epochs: must be 0..{t.epochs - 1} (fewer than train.epochs), got {t.freeze_epochs}"
        )
    if (t.mixup or t.cutmix) and t.batch_size % 2:
        raise ConfigError(
            f"train.batch_size: mixup/cutmix mix a batch with its mirror, so it must be even, got {t.batch_size}"
        )
    if cfg.model.head == "regression" and cfg.data.task != "ordinal":
        raise ConfigError(
            f"model.head: regression needs data.task ordinal (ordered numeric classes), not {cfg.data.task}"
        )
    if t.sampler == "balanced" and cfg.data.task == "multi_label":
        raise ConfigError("train.sampler: balanced is for single-label data; use train.class_weights for multi-label")
    if t.class_weights != "none" and cfg.model.head == "regression":
        raise ConfigError("train.class_weights: a regression head has no class weights; use train.sampler: balanced")
    repeated = sorted({seed for seed in t.seeds if t.seeds.count(seed) > 1})
    if repeated:
        raise ConfigError(f"train.seeds: {repeated} listed more than once; list each seed once, e.g. [42, 43, 44]")
    if t.swa.epochs > t.epochs:
        raise ConfigError(f"train.swa.epochs: averages the last N of train.epochs ({t.epochs}), got {t.swa.epochs}")
    validate_sources(cfg)


def validate_sources(cfg: Config) -> None:
    """train.pseudo / train.soft_labels: the tasks, heads and losses that take soft targets (files: data.sources)."""
    t = cfg.train
    for key, on in (("train.pseudo", t.pseudo.from_), ("train.soft_labels", t.soft_labels.from_)):
        if not on:
            continue
        if cfg.model.head == "regression":
            raise ConfigError(f"{key}: a regression head trains on numbers, not class probabilities; use "
                              f"model.head: classifier or leave {key}.from empty")  # fmt: skip
        if cfg.data.task == "multi_label":
            raise ConfigError(f"{key}: multi-label data is not supported (no per-label threshold yet); leave "
                              f"{key}.from empty")  # fmt: skip
        if t.loss == "asymmetric":
            raise ConfigError(f"{key}: the single-label asymmetric loss takes class indices, not soft targets; use "
                              "train.loss: auto, cross_entropy or focal")  # fmt: skip


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain values under their YAML keys (a field named `from_` is written `from`)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values[f.metadata.get("key", f.name)] = (
            to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
        )
    return values


def dump_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False, allow_unicode=True)


def fingerprint(cfg: Config, sections: tuple[str, ...]) -> str:
    """A short hash of the given sections: the identity of the work they produce."""
    values = {key: to_dict(cfg)[key] for key in sections}
    for section, key in NOT_FINGERPRINTED:
        if isinstance(values.get(section), dict):
            values[section].pop(key, None)
    for section, key, off in FINGERPRINTED_WHEN_ON:
        if isinstance(values.get(section), dict) and values[section].get(key) == off:
            values[section].pop(key)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def training_fingerprint(cfg: Config) -> str:
    """What trained a fold's weights (the TRAINING_SECTIONS): the one fingerprint weights, predictions, bundles and
    trackers record and compare."""
    return fingerprint(cfg, TRAINING_SECTIONS)


# What a fold's trained weights depend on; a checkpoint made under another fingerprint is not resumed.
TRAINING_SECTIONS = ("data", "folds", "model", "train", "augment", "sample")
# Settings that change how fast work runs, not what it produces: changing them never blocks a resume.
NOT_FINGERPRINTED = (
    ("train", "num_workers"),
    ("train", "cache"),
    ("train", "time_budget"),
    ("train", "checkpoint_every"),
    ("train", "compile"),
    ("data", "holdout"),
)
# Keys added after runs were trained: left out of the hash while off, so turning them on retrains and older
# runs keep their fingerprint.
FINGERPRINTED_WHEN_ON = (
    ("train", "swa", {"epochs": 0}),
    ("train", "pseudo", to_dict(PseudoConfig())),
    ("train", "soft_labels", to_dict(SoftLabelsConfig())),
    ("train", "seeds", []),
)


def config_from_values(values: dict[str, Any]) -> Config:
    """A Config from a full mapping such as `to_dict` writes (a run's resolved config.yaml); validated."""
    cfg = build_section(Config, values, "")
    validate(cfg)
    return one_seed_as_seed(cfg)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists become compact JSON so they compare and print."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat
