"""Typed, small and loud configuration.

Defaults live here, in code. A competition's configs/<comp>/competition.yaml holds its data layout,
metric and folds; an experiment's configs/<comp>/<exp>.yaml holds only what differs for the model,
training and TTA. Unknown keys and wrong types fail with the key's name; `key=value` overrides
(dotted keys) come from the command line (`--set`, or Make's SET="...").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

TASKS = ("single_label", "multi_label", "ordinal")
SUBMISSION_FORMATS = ("label", "probabilities", "labels", "numeric")


@dataclass
class DataConfig:
    train_csv: str | None = "train.csv"  # None: one folder per class under train_dir
    id_column: str = "id"
    label_column: str | None = "label"  # single column: a class name, or separated names (multi-label)
    label_columns: list[str] = field(default_factory=list)  # one 0/1 column per label (multi-label)
    task: str = "single_label"  # single_label | multi_label | ordinal
    label_separator: str = " "  # multi-label names in one column
    classes: list[str] = field(default_factory=list)  # fixed order of probability columns
    train_dir: str = "train"
    test_dir: str = "test"
    image_ext: str = ""  # appended to ids to find the file; "" when ids already carry it
    test_csv: str | None = "sample_submission.csv"  # lists test ids; None: every image in test_dir
    submission_id_column: str = "id"
    submission_format: str = "label"  # label | probabilities | labels | numeric
    submission_columns: list[str] = field(default_factory=list)  # columns after the id, in order
    holdout: str | None = None  # optional CSV (id, label) of test labels, scored as `holdout`


@dataclass
class FoldsConfig:
    n_folds: int = 5
    seed: int = 42
    group_column: str | None = None


@dataclass
class ModelConfig:
    name: str = "resnet18"
    pretrained: bool | str = True  # true: timm's hub; false: random init; a path: local weights file
    drop_rate: float = 0.0
    head: str = "classifier"  # classifier | regression (ordinal targets: one output, MSE, cut points fitted on OOF)


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float | str = 1.0e-3  # a number, or auto: lr-find's suggestion (data/runs/<comp>/<exp>/lr_find.json)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1.0e-6
    opt: str = "adamw"  # any timm.optim.create_optimizer_v2 name
    sched: str = "cosine"  # any timm.scheduler.create_scheduler_v2 name
    label_smoothing: float = 0.0
    image_size: int | None = None  # None: the backbone's pretrained input size
    num_workers: int = 2
    seed: int = 42
    sync_bn: bool = False  # under torchrun (GPUS=N): BatchNorm statistics over the global batch (CUDA only)
    cache: bool = True  # decode each image once into data/processed/<comp>/cache/ (pipeline.cache)
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler)
    deterministic: bool = False  # deterministic algorithms: a CPU re-run (or resume) gives identical weights
    time_budget: str | float | None = None  # e.g. 8h30m: stop cleanly (resumable) when reached
    checkpoint_every: int = 0  # also checkpoint every N steps within an epoch (0: at epoch ends only)
    # The recipe (pipeline.recipe). Defaults reproduce plain fine-tuning; init's baseline.yaml sets the measured ones.
    freeze_epochs: int = 0  # first N of `epochs` train the head only (fastai's fine_tune); norm layers stay trainable
    backbone_lr_factor: float = 1.0  # backbone LR = lr x this (discriminative LR); the head gets lr
    layer_decay: float | None = None  # e.g. 0.75: each earlier layer group's LR x this (timm's param groups)
    ema: bool = False  # a weight EMA (timm ModelEmaV3), scored each epoch; saved unless the raw weights score better
    ema_decay: float = 0.999  # upper bound; timm's warmup makes short runs average over fewer steps
    mixup: float = 0.0  # mixup alpha (timm.data.Mixup); 0 disables; soft-target loss when on
    cutmix: float = 0.0  # cutmix alpha; 0 disables; with both on, each batch picks one at random
    mix_prob: float = 1.0  # probability that a batch is mixed when mixup or cutmix is on
    accumulate: int = 1  # gradient accumulation: one optimizer step every N batches
    clip_grad: float | None = None  # clip the gradient norm to this (timm.utils.dispatch_clip_grad); null: off
    keep: str = "best"  # best: the epoch with the best validation score is saved; last: the final epoch
    early_stopping: int = 0  # stop after N epochs without a better validation score; 0: off
    compile: bool = False  # torch.compile the training forward (first step compiles: tens of seconds)
    cpu_bf16: bool = False  # bf16 autocast on CPU (on CUDA, `amp` decides)
    class_weights: str = "none"  # none | balanced: loss weights inverse to class frequency (multi-label: pos_weight)
    sampler: str = "shuffle"  # shuffle | balanced: draw rows with probability inverse to class frequency
    progressive_sizes: list[int] = field(default_factory=list)  # e.g. [32, 48]: train sizes, in equal epoch blocks


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.0
    scale_min: float = 0.5  # RandomResizedCrop's lower area bound
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; 0 disables
    rotate: float = 0.0  # max degrees of random rotation; 0 disables


@dataclass
class TTAConfig:
    views: list[str] | str = field(default_factory=lambda: ["identity", "hflip"])  # or auto: chosen on OOF


@dataclass
class Config:
    comp: str = ""
    exp: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    metric: str = "accuracy"
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    device: str = "auto"  # auto | cpu | cuda | mps
    sample: int = 0  # >0: a stratified N-image subset with its own output paths
    tracking: str = "none"  # none | mlflow | tensorboard | wandb: sync the run's files to a tracker (pipeline.tracking)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


COMPETITION_KEYS = ("data", "metric", "folds")
EXPERIMENT_KEYS = ("model", "train", "augment", "tta", "device", "sample", "tracking")


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # class names like 0..9 read as ints from YAML
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation} for {key}")  # a bug in this module


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build dataclass `cls` from `values`, rejecting unknown keys and wrong types by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{section}." if section else ""
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}" if section else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value if value is not None else {}, key)
        else:
            kwargs[name] = _check_type(value, annotation, key)
    return cls(**kwargs)


def _read_yaml(path: Path) -> dict[str, Any]:
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


def _apply_override(values: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
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


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Merge competition.yaml (beside `path`) with the experiment yaml and overrides; validate."""
    path = Path(path)
    comp_path, comp, exp = config_paths(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found; run `make init COMP=<slug>` or check CONFIG=")
    competition = _read_yaml(comp_path) if comp_path.exists() else {}
    misplaced = sorted(set(competition) - set(COMPETITION_KEYS))
    if misplaced:
        raise ConfigError(f"{comp_path}: unknown key(s) {', '.join(misplaced)}; known: {', '.join(COMPETITION_KEYS)}")
    values: dict[str, Any] = dict(competition)
    if exp:
        experiment = _read_yaml(path)
        for key, value in experiment.items():
            if key in values and isinstance(value, dict) and isinstance(values[key], dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(values, parts, value, text)
    for key in ("comp", "exp"):
        if key in values:
            raise ConfigError(f"{path}: key {key!r} is set from the file's location, remove it")
    values["comp"], values["exp"] = comp, exp
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    if cfg.data.task not in TASKS:
        raise ConfigError(f"data.task: {cfg.data.task!r} is not one of {', '.join(TASKS)}")
    if cfg.data.submission_format not in SUBMISSION_FORMATS:
        raise ConfigError(
            f"data.submission_format: {cfg.data.submission_format!r} is not one of {', '.join(SUBMISSION_FORMATS)}"
        )
    if cfg.folds.n_folds < 2:
        raise ConfigError(f"folds.n_folds: must be at least 2, got {cfg.folds.n_folds}")
    if cfg.device not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device: {cfg.device!r} is not one of auto, cpu, cuda, mps")
    for key in ("epochs", "batch_size"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key}: must be at least 1, got {getattr(cfg.train, key)}")
    if cfg.train.num_workers < 0:
        raise ConfigError(f"train.num_workers: must be 0 or more, got {cfg.train.num_workers}")
    if cfg.train.image_size is not None and cfg.train.image_size < 8:
        raise ConfigError(f"train.image_size: must be at least 8 pixels, got {cfg.train.image_size}")
    validate_recipe(cfg)
    from pipeline.tracking import TRACKERS

    if cfg.tracking not in TRACKERS:
        raise ConfigError(f"tracking: {cfg.tracking!r} is not one of {', '.join(TRACKERS)}")
    if cfg.sample < 0:
        raise ConfigError(f"sample: must be 0 (off) or a number of images, got {cfg.sample}")
    from pipeline.metrics import METRICS
    from pipeline.tta import VIEWS

    if cfg.metric not in METRICS:
        raise ConfigError(f"metric: unknown metric {cfg.metric!r}; known: {', '.join(sorted(METRICS))}")
    if isinstance(cfg.tta.views, str) and cfg.tta.views != "auto":
        raise ConfigError(f"tta.views: expected a list of views or auto, got {cfg.tta.views!r}")
    for i, view in enumerate(cfg.tta.views if isinstance(cfg.tta.views, list) else []):
        if view not in VIEWS:
            raise ConfigError(f"tta.views[{i}]: unknown view {view!r}; known: {', '.join(VIEWS)}")


def validate_recipe(cfg: Config) -> None:
    """The training recipe's keys: ranges, choices, and combinations that cannot work."""
    t = cfg.train
    if isinstance(t.lr, str) and t.lr != "auto":
        raise ConfigError(f"train.lr: expected a number or auto, got {t.lr!r}")
    if not isinstance(t.lr, str) and t.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {t.lr}")
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
    for key in ("backbone_lr_factor", "ema_decay", "mix_prob"):
        if not 0 <= getattr(t, key) <= 1:
            raise ConfigError(f"train.{key}: must be between 0 and 1, got {getattr(t, key)}")
    if t.layer_decay is not None and not 0 < t.layer_decay <= 1:
        raise ConfigError(f"train.layer_decay: must be in (0, 1] or null, got {t.layer_decay}")
    for key in ("mixup", "cutmix", "early_stopping"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}: must be 0 (off) or more, got {getattr(t, key)}")
    if (t.mixup or t.cutmix) and t.batch_size % 2:
        raise ConfigError(
            f"train.batch_size: mixup/cutmix mix a batch with its mirror, so it must be even, got {t.batch_size}"
        )
    if t.accumulate < 1:
        raise ConfigError(f"train.accumulate: must be at least 1, got {t.accumulate}")
    if t.clip_grad is not None and t.clip_grad <= 0:
        raise ConfigError(f"train.clip_grad: must be positive or null, got {t.clip_grad}")
    for i, size in enumerate(t.progressive_sizes):
        if size < 8:
            raise ConfigError(f"train.progressive_sizes[{i}]: must be at least 8 pixels, got {size}")
    if cfg.model.head == "regression" and cfg.data.task != "ordinal":
        raise ConfigError(
            f"model.head: regression needs data.task ordinal (ordered numeric classes), not {cfg.data.task}"
        )
    if t.sampler == "balanced" and cfg.data.task == "multi_label":
        raise ConfigError("train.sampler: balanced is for single-label data; use train.class_weights for multi-label")
    if t.class_weights != "none" and cfg.model.head == "regression":
        raise ConfigError("train.class_weights: a regression head has no class weights; use train.sampler: balanced")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False, allow_unicode=True)


def fingerprint(cfg: Config, sections: tuple[str, ...]) -> str:
    """A short hash of the given sections: the identity of the work they produce."""
    values = {key: to_dict(cfg)[key] for key in sections}
    for section, key in NOT_FINGERPRINTED:
        if isinstance(values.get(section), dict):
            values[section].pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


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
