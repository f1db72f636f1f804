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
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import ConfigError

TASKS = ("single_label", "multi_label", "ordinal")
SEED_MAX = 2**32 - 1  # numpy / sklearn random_state


@dataclass(frozen=True)
class Range:
    """The allowed values of a number field (each bound inclusive unless marked open); None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'more than' if self.low_open else 'at least'} {self.low:g}"
        if self.low is None:
            return f"{'less than' if self.high_open else 'at most'} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def ranged(default: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, factory: Any = None) -> Any:  # fmt: skip
    """A dataclass field whose number value (or each number of its list) must lie in the range; `_build` checks it."""
    metadata = {"range": Range(low, high, low_open, high_open)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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
    n_folds: int = ranged(5, 2)
    seed: int = ranged(42, 0, SEED_MAX)
    group_column: str | None = None


@dataclass
class ModelConfig:
    name: str = "resnet18"
    pretrained: bool | str = True  # true: timm's hub; false: random init; a path: local weights file
    drop_rate: float = ranged(0.0, 0, 1, high_open=True)  # dropout before the classifier (timm's drop_rate)
    # stochastic depth (timm's drop_path_rate): residual blocks dropped per sample
    drop_path_rate: float = ranged(0.0, 0, 1, high_open=True)
    head: str = "classifier"  # classifier | regression (ordinal targets: one output, MSE, cut points fitted on OOF)


@dataclass
class SwaConfig:
    """train.swa: a checkpoint soup of the last epochs (pipeline.training.recipe.swa_*)."""

    epochs: int = ranged(0, 0)  # average the weights of the last N epochs (BatchNorm re-estimated); 0: off


@dataclass
class TrainConfig:
    epochs: int = ranged(5, 1)
    batch_size: int = ranged(32, 1)
    lr: float | str = ranged(
        1.0e-3, 0, low_open=True
    )  # a number, or auto: lr-find's suggestion (data/runs/<comp>/<exp>/lr_find.json)
    weight_decay: float = ranged(0.05, 0)
    # None: budget-aware, WARMUP_FRACTION of the run (pipeline.training.recipe.budget)
    warmup_epochs: float | None = ranged(None, 0)
    min_lr: float = ranged(1.0e-6, 0)
    opt: str = "adamw"  # any timm.optim.create_optimizer_v2 name
    sched: str = "cosine"  # any timm.scheduler.create_scheduler_v2 name
    label_smoothing: float = ranged(0.0, 0, 1, high_open=True)
    loss: str = "auto"  # auto | cross_entropy | bce | focal | asymmetric (pipeline.training.losses)
    focal_gamma: float = ranged(2.0, 0)  # focal loss focusing strength
    focal_alpha: float | None = ranged(0.25, 0, 1)  # multi-label focal loss positive weight (torchvision); null: off
    asl_gamma_neg: float = ranged(4.0, 0)  # asymmetric loss (timm): focusing on negatives
    asl_gamma_pos: float = ranged(1.0, 0)  # asymmetric loss (timm): focusing on positives
    asl_clip: float = ranged(0.05, 0, 1)  # asymmetric loss, multi-label: probability margin shifted onto negatives
    image_size: int | None = ranged(None, 8)  # None: the backbone's pretrained input size
    num_workers: int = ranged(2, 0)
    seed: int = ranged(42, 0, SEED_MAX)
    sync_bn: bool = False  # under torchrun (GPUS=N): BatchNorm statistics over the global batch (CUDA only)
    cache: bool = True  # decode each image once into data/processed/<comp>/cache/ (pipeline.data.cache)
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler)
    deterministic: bool = False  # deterministic algorithms: a CPU re-run (or resume) gives identical weights
    time_budget: str | float | None = ranged(
        None, 0, low_open=True
    )  # e.g. 8h30m: stop cleanly (resumable) when reached
    checkpoint_every: int = ranged(0, 0)  # also checkpoint every N steps within an epoch (0: at epoch ends only)
    # The recipe (pipeline.training.recipe). Defaults reproduce plain fine-tuning; init's baseline.yaml sets the
    # measured ones.
    freeze_epochs: int = ranged(
        0, 0
    )  # first N of `epochs` train the head only (fastai's fine_tune); norm layers stay trainable
    backbone_lr_factor: float = ranged(1.0, 0, 1)  # backbone LR = lr x this (discriminative LR); the head gets lr
    layer_decay: float | None = ranged(
        None, 0, 1, low_open=True
    )  # e.g. 0.75: each earlier layer group's LR x this (timm's param groups)
    ema: bool = False  # a weight EMA (timm ModelEmaV3), scored each epoch; saved unless the raw weights score better
    # None: budget-aware, averages over ~EMA_HORIZON of the run's updates
    ema_decay: float | None = ranged(None, 0, 1)
    head_init_scale: float = ranged(0.0, 0)  # the new classifier's weights x this after timm's init (0: zero head)
    freeze_bn: bool = False  # BatchNorm layers stay in eval mode (running statistics frozen) while training
    mixup: float = ranged(0.0, 0)  # mixup alpha (timm.data.Mixup); 0 disables; soft-target loss when on
    cutmix: float = ranged(0.0, 0)  # cutmix alpha; 0 disables; with both on, each batch picks one at random
    mix_prob: float = ranged(1.0, 0, 1)  # probability that a batch is mixed when mixup or cutmix is on
    accumulate: int = ranged(1, 1)  # gradient accumulation: one optimizer step every N batches
    clip_grad: float | None = ranged(
        None, 0, low_open=True
    )  # clip the gradient norm to this (timm.utils.dispatch_clip_grad); null: off
    keep: str = "last"  # last: the final epoch (honest OOF); best: the best-scoring epoch (optimistic OOF)
    early_stopping: int = ranged(0, 0)  # stop after N epochs without a better validation score; 0: off
    compile: bool = False  # torch.compile the training forward (first step compiles: tens of seconds)
    cpu_bf16: bool = False  # bf16 autocast on CPU (on CUDA, `amp` decides)
    class_weights: str = "none"  # none | balanced: loss weights inverse to class frequency (multi-label: pos_weight)
    sampler: str = "shuffle"  # shuffle | balanced: draw rows with probability inverse to class frequency
    progressive_sizes: list[int] = ranged(None, 8, factory=list)  # e.g. [32, 48]: train sizes, in equal epoch blocks
    swa: SwaConfig = field(default_factory=SwaConfig)  # {epochs: 3}: soup of the last 3 epochs, kept if not worse


@dataclass
class AugmentConfig:
    hflip: float = ranged(0.5, 0, 1)
    vflip: float = ranged(0.0, 0, 1)
    # RandomResizedCrop's lower area bound; None: budget-aware (pipeline.training.recipe)
    scale_min: float | None = ranged(None, 0, 1, low_open=True)
    ratio_range: float = ranged(1 / 3, 0)  # crop aspect ratio in [1/(1+r), 1+r] (timm's 3/4..4/3); 0: square crops
    # brightness/contrast/saturation strength; 0 disables; None: budget-aware
    color_jitter: float | None = ranged(None, 0)
    rotate: float = ranged(0.0, 0, 180)  # max degrees of random rotation; 0 disables
    # Named policies (pipeline.data.augment_policies); default is the pipeline above, built from the keys above.
    policy: str = "default"  # default | light | medium | heavy | randaugment | trivialaugment | custom
    custom: list[Any] = field(default_factory=list)  # policy custom: [Name, {Name: {argument: value}}, ...]
    magnitude: float = ranged(9.0, 0, 10)  # randaugment: strength 0-10
    num_ops: int = ranged(2, 1)  # randaugment: ops applied per image
    erasing: float = ranged(0.0, 0, 1)  # probability of random erasing (A.Erasing), any policy
    coarse_dropout: float = ranged(0.0, 0, 1)  # probability of coarse dropout (A.CoarseDropout), any policy


@dataclass
class TTAConfig:
    views: list[str] | str = field(default_factory=lambda: ["identity", "hflip"])  # or auto: chosen on OOF


ACCELERATORS = ("t4x2", "l4", "p100", "none")  # kaggle.accelerator (pipeline.kaggle.bundle maps them to Kaggle's)


@dataclass
class KaggleConfig:
    accelerator: str = ""  # t4x2 | l4 | p100 | none; empty: t4x2 (none when device is cpu); flag > env > this


@dataclass
class EnsembleConfig:
    refit: bool = False  # also average the full-data refit's test predictions (make refit) with the folds'


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
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    device: str = "auto"  # auto | cpu | cuda | mps
    sample: int = ranged(0, 0)  # >0: a stratified N-image subset with its own output paths
    tracking: str = (
        "none"  # none | mlflow | tensorboard | wandb: sync the run's files to a tracker (pipeline.reporting.tracking)
    )
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)  # the inference kernel's settings (kaggle-bundle)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


TRACKERS = ("none", "mlflow", "tensorboard", "wandb")  # tracking: where pipeline.reporting.tracking syncs a run's files
COMPETITION_KEYS = ("data", "metric", "folds")
EXPERIMENT_KEYS = ("model", "train", "augment", "tta", "ensemble", "device", "sample", "tracking", "kaggle")


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
    ranges = {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}" if section else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value if value is not None else {}, key)
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
    from YAML (the notebook API, sweeps), get the same one-line errors as `_build` gives a file."""
    for f in dataclasses.fields(obj):
        key = f"{section}.{f.name}" if section else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
        elif "range" in f.metadata:
            _check_range(value, f.metadata["range"], key)


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
    _custom_metric_folders(path)
    if "metric" in values:  # a mapping ({name: map, k: 5} or a custom function) becomes the metric's one string
        from pipeline.core.metrics import canonical

        values["metric"] = canonical(values["metric"])
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


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
    from pipeline.training.losses import validate_loss

    validate_loss(cfg)
    if cfg.augment.policy != "default" or cfg.augment.custom:  # albumentations is imported only when needed
        from pipeline.data.augment_policies import validate_augment

        validate_augment(cfg.augment)
    if cfg.tracking not in TRACKERS:
        raise ConfigError(f"tracking: {cfg.tracking!r} is not one of {', '.join(TRACKERS)}")
    if cfg.kaggle.accelerator and cfg.kaggle.accelerator not in ACCELERATORS:
        raise ConfigError(f"kaggle.accelerator: {cfg.kaggle.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    from pipeline.core.metrics import check_task
    from pipeline.inference.tta import VIEWS

    check_task(cfg.metric, cfg.data.task)  # an unknown or malformed metric fails here, naming `metric`
    if isinstance(cfg.tta.views, str) and cfg.tta.views != "auto":
        raise ConfigError(f"tta.views: expected a list of views or auto, got {cfg.tta.views!r}")
    for i, view in enumerate(cfg.tta.views if isinstance(cfg.tta.views, list) else []):
        if view not in VIEWS:
            raise ConfigError(f"tta.views[{i}]: unknown view {view!r}; known: {', '.join(VIEWS)}")


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
    if t.swa.epochs > t.epochs:
        raise ConfigError(f"train.swa.epochs: averages the last N of train.epochs ({t.epochs}), got {t.swa.epochs}")


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
    for section, key, off in FINGERPRINTED_WHEN_ON:
        if isinstance(values.get(section), dict) and values[section].get(key) == off:
            values[section].pop(key)
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
# Keys added after runs were trained: left out of the hash while off, so turning them on retrains and older
# runs keep their fingerprint.
FINGERPRINTED_WHEN_ON = (("train", "swa", {"epochs": 0}),)


def config_from_values(values: dict[str, Any]) -> Config:
    """A Config from a full mapping such as `to_dict` writes (a run's resolved config.yaml); validated."""
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


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
