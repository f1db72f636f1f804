"""The config schema: one dataclass per section with its defaults, the number ranges each field allows, and the
named choices. Plain data: no loading, no validation logic, no torch; pipeline.core.config loads and checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """A dataclass field whose number value (or each number of its list) must lie in the range (checked on load)."""
    metadata = {"range": Range(low, high, low_open, high_open)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


SUBMISSION_FORMATS = ("label", "probabilities", "labels", "numeric")

# Named choices the config is checked against here, without importing what builds them (torch, albumentations):
# each builder's table is keyed by the same names (tests/core/test_schema_choices.py checks they agree).
LOSSES = (
    "auto",
    "cross_entropy",
    "bce",
    "focal",
    "asymmetric",
    "logit_adjusted",
)  # train.loss (pipeline.training.losses)
AUGMENT_POLICIES = ("default", "light", "medium", "heavy", "randaugment", "trivialaugment", "custom")  # augment.policy
RANDAUGMENT_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast",
                   "saturation", "sharpness", "posterize", "solarize", "equalize", "autocontrast")  # fmt: skip
TTA_VIEWS = ("identity", "hflip", "vflip", "hvflip", "rot90", "rot270", "transpose", "zoom")  # tta.views
BLEND_METHODS = ("mean", "geometric", "rank", "fitted", "greedy")  # blend.yaml's method (pipeline.inference.blend)


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
    """train.swa: a checkpoint soup of the last epochs (pipeline.training.averaging)."""

    epochs: int = ranged(0, 0)  # average the weights of the last N epochs (BatchNorm re-estimated); 0: off


@dataclass
class PseudoConfig:
    """train.pseudo: test rows the source predicted confidently join every fold's training side (pipeline.data.sources,
    pipeline.training.pseudo). `from_` is the YAML key `from` (a Python keyword)."""

    from_: str = field(default="", metadata={"key": "from"})  # an experiment or blend name; empty: off
    threshold: float = ranged(0.9, 0, 1)  # a test row joins when the source's max class probability is at least this
    soft: bool = False  # true: every test row joins, with the source's probabilities as its soft target
    weight: float = ranged(1.0, 0, low_open=True)  # multiplies the pseudo rows' loss


@dataclass
class SoftLabelsConfig:
    """train.soft_labels: OOF distillation, target = (1 - alpha) one-hot + alpha x the source's OOF probabilities."""

    from_: str = field(default="", metadata={"key": "from"})  # an experiment or blend name; empty: off
    alpha: float = ranged(0.3, 0, 1)


@dataclass
class TrainConfig:
    epochs: int = ranged(5, 1)
    batch_size: int = ranged(32, 1)
    lr: float | str = ranged(
        1.0e-3, 0, low_open=True
    )  # a number, or auto: lr-find's suggestion (data/runs/<comp>/<exp>/lr_find.json)
    weight_decay: float = ranged(0.05, 0)
    # None: budget-aware, WARMUP_FRACTION of the run (pipeline.core.budget)
    warmup_epochs: float | None = ranged(None, 0)
    min_lr: float = ranged(1.0e-6, 0)
    opt: str = "adamw"  # any timm.optim.create_optimizer_v2 name
    sched: str = "cosine"  # any timm.scheduler.create_scheduler_v2 name
    label_smoothing: float = ranged(0.0, 0, 1, high_open=True)
    loss: str = "auto"  # auto | cross_entropy | bce | focal | asymmetric | logit_adjusted (pipeline.training.losses)
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
    # The recipe (pipeline.training: optim, schedule, averaging, losses). Defaults reproduce plain fine-tuning;
    # init's baseline.yaml sets the measured ones.
    freeze_epochs: int = ranged(
        0, 0
    )  # first N of `epochs` train the head only (fastai's fine_tune); norm layers stay trainable
    backbone_lr_factor: float = ranged(1.0, 0, 1)  # backbone LR = lr x this (discriminative LR); the head gets lr
    layer_decay: float | None = ranged(
        None, 0, 1, low_open=True
    )  # e.g. 0.75: each earlier layer group's LR x this (timm's param groups)
    ema: bool = False  # a weight EMA (timm ModelEmaV3), scored where that decides; saved unless raw weights do better
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
    # A seed bag (pipeline.core.bag): [42, 43, 44] trains each fold once per seed in fold<k>/seed<s>/ and averages
    # the seeds' probabilities within the fold; [] (or one seed, which acts as train.seed): one model per fold.
    seeds: list[int] = ranged(None, 0, SEED_MAX, factory=list)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)  # {from: <exp|blend>}: pseudo-labelled test rows
    soft_labels: SoftLabelsConfig = field(default_factory=SoftLabelsConfig)  # {from: <exp|blend>}: OOF distillation


@dataclass
class AugmentConfig:
    hflip: float = ranged(0.5, 0, 1)
    vflip: float = ranged(0.0, 0, 1)
    # RandomResizedCrop's lower area bound; None: budget-aware (pipeline.core.budget)
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
WEIGHTS_TRAVEL = ("dataset", "model")  # kaggle.weights: how kaggle-push ships the fold weights (pipeline.kaggle.push)


@dataclass
class KaggleConfig:
    accelerator: str = ""  # t4x2 | l4 | p100 | none; empty: t4x2 (none when device is cpu); flag > env > this
    weights: str = "dataset"  # dataset: in the bundle's dataset; model: a versioned Kaggle Model (--weights, MODEL=1)
    # RUNNER=kaggle (pipeline.kaggle.remote): each training unit runs as a Kaggle notebook
    internet: bool = True  # the training notebooks have internet (hub weights download there)
    session_limit: str | float = ranged("12h", 0, low_open=True)  # a session's limit; units stop (resumably) before
    sessions: int = ranged(2, 1)  # notebooks running at once; a push Kaggle refuses for too many sessions waits
    units_per_notebook: int | None = ranged(None, 1, 2)  # null: 2 on t4x2 (one unit per GPU), else 1


@dataclass
class EnsembleConfig:
    refit: bool = False  # also average the full-data refit's test predictions (make refit) with the folds'


@dataclass
class CacheConfig:
    """The decoded-image cache (pipeline.data.cache; train.cache turns it on)."""

    max_gb: float = ranged(0.0, 0)  # >0: stream from the originals rather than build a cache larger than this
    workers: int = ranged(0, 0)  # decode processes building it; 0: one per core when one core would take > 3 s


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
    cache: CacheConfig = field(default_factory=CacheConfig)  # the image cache's size limit and decode processes

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


TRACKERS = ("none", "mlflow", "tensorboard", "wandb")  # tracking: where pipeline.reporting.tracking syncs a run's files
COMPETITION_KEYS = ("data", "metric", "folds")
EXPERIMENT_KEYS = ("model", "train", "augment", "tta", "ensemble", "device", "sample", "tracking", "kaggle", "cache")
