"""The training recipe's building blocks, each a thin layer over timm's own.

- Parameter groups: head vs backbone LR (`train.backbone_lr_factor`) and layer-wise LR decay
  (`train.layer_decay`) through timm.optim's param-group helpers; timm's schedulers honour each group's
  `lr_scale`, so one schedule drives every group at its ratio.
- Freeze-then-unfreeze (`train.freeze_epochs`, fastai's fine_tune): the backbone's weights stop
  receiving gradients; normalisation layers stay trainable, as fastai does. Each phase gets its own
  warmup + cosine schedule (PhasedScheduler).
- Mixup/cutmix (timm.data.Mixup) with a soft-target loss, model EMA (timm.utils.ModelEmaV3), gradient
  clipping (timm.utils.dispatch_clip_grad), class weights and a class-balanced sampler.
- Thresholds fitted on OOF rows: per-label thresholds (multi-label) and ordinal cut points applied to
  the expected class (sum_k k * p_k). A regression head's output y is stored as a "two-hot" soft
  assignment over the two nearest classes (expected class = y), so prediction files keep the contract
  `id + one column per class` and folds, TTA views and thresholds still work on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad

from pipeline.core.config import Config, TrainConfig
from pipeline.core.metrics import METRICS, goodness, is_better, uses_thresholds
from pipeline.data.loader import EpochSampler
from pipeline.training.budget import budget_ema_decay, budget_warmup

NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)


def prepare_model(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Head init (timm's init x head_init_scale; 0 = zero head, so the first loss is ln(classes)) and
    optionally BatchNorm kept in eval mode (running statistics frozen) whenever the model trains."""
    if cfg.head_init_scale != 1.0:
        with torch.no_grad():
            for p in model.get_classifier().parameters():
                p.mul_(cfg.head_init_scale)
    if cfg.freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.train = lambda mode=True, m=module: torch.nn.Module.train(m, False)


# --- parameter groups, freezing, optimizer and schedule ---------------------------------------------------


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the classifier's parameters (timm's get_classifier(): the layer that num_classes resized)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """timm's weight-decay (or layer-decay) groups, each split into head and backbone parts.

    Every group carries `lr_scale` (timm's schedulers set lr = schedule(t) * lr_scale) and a `name`:
    the head keeps scale 1, the backbone gets backbone_lr_factor times its layer-decay scale.
    """
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if cfg.layer_decay is not None and cfg.layer_decay < 1:
        groups = param_groups_layer_decay(model, cfg.weight_decay, no_decay, layer_decay=cfg.layer_decay)
    else:
        groups = [{**g, "lr_scale": 1.0} for g in param_groups_weight_decay(model, cfg.weight_decay, True, no_decay)]
    head = {id(p) for p in model.get_classifier().parameters()}
    split: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        decay = "decay" if group["weight_decay"] else "no_decay"
        for part in ("head", "backbone"):
            params = [p for p in group["params"] if (id(p) in head) == (part == "head")]
            if not params:
                continue
            scale = 1.0 if part == "head" else group["lr_scale"] * cfg.backbone_lr_factor
            split.append({**group, "params": params, "lr_scale": scale, "name": f"{part}_{i}_{decay}"})
    return split


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The head's current LR (what logs report; backbone groups run at their lr_scale of it)."""
    return next((g["lr"] for g in optimizer.param_groups if g.get("name", "").startswith("head")), 0.0)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    return create_optimizer_v2(param_groups(model, cfg), opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay)


def set_backbone_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Frozen: only the head and the normalisation layers train (fastai's freeze with train_bn)."""
    head = head_parameter_names(model)
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name in head or id(p) in norm)


class PhasedScheduler:
    """timm schedulers in sequence: the frozen phase, then the unfrozen one, each with its own warmup.

    `step_update(n)` takes the number of optimizer updates done so far, as timm's schedulers do.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, lr: float, updates_per_epoch: int) -> None:
        phases = [cfg.freeze_epochs, cfg.epochs - cfg.freeze_epochs] if cfg.freeze_epochs else [cfg.epochs]
        self.starts = [sum(phases[:i]) * updates_per_epoch for i in range(len(phases))]
        self.schedulers = [
            create_scheduler_v2(
                optimizer, sched=cfg.sched, num_epochs=epochs, warmup_epochs=budget_warmup(cfg, epochs),
                min_lr=cfg.min_lr, warmup_lr=lr * 0.01, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
            )[0]
            for epochs in phases
        ]  # fmt: skip

    def step_update(self, num_updates: int) -> None:
        phase = max(i for i, start in enumerate(self.starts) if num_updates >= start)
        self.schedulers[phase].step_update(num_updates - self.starts[phase])

    def state_dict(self) -> dict[str, Any]:
        return {str(i): s.state_dict() for i, s in enumerate(self.schedulers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, s in enumerate(self.schedulers):
            s.load_state_dict(state[str(i)])


def clip_and_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Any, clip: float | None
) -> None:
    """One optimizer update: unscale (fp16), clip the gradient norm, step, and clear the gradients."""
    if clip:
        scaler.unscale_(optimizer)
        dispatch_clip_grad(params, clip, mode="norm")
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def build_ema(model: torch.nn.Module, cfg: TrainConfig, total_updates: int = 0) -> ModelEmaV3 | None:
    """timm's EMA with warmup (decay 1 - (1 + step)^-2/3, capped at the budget's ema_decay)."""
    return ModelEmaV3(model, decay=budget_ema_decay(cfg, total_updates), use_warmup=True) if cfg.ema else None


def build_swa(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """train.swa: an equal-weight running mean of the weights at the end of each of the last N epochs (torch's
    AveragedModel; parameters only: BatchNorm statistics are re-estimated by `swa_finish`)."""
    return torch.optim.swa_utils.AveragedModel(model) if cfg.swa.epochs else None


def swa_takes(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the epoch that just finished (1-based) is one of the last train.swa.epochs."""
    return bool(cfg.swa.epochs) and epoch > cfg.epochs - cfg.swa.epochs


def swa_finish(
    swa: torch.optim.swa_utils.AveragedModel, loader: Any, device: torch.device, cfg: TrainConfig
) -> torch.nn.Module:
    """The averaged model with BatchNorm running statistics recomputed over one pass of the training batches
    (unless train.freeze_bn keeps them as they were)."""
    if not cfg.freeze_bn:
        torch.optim.swa_utils.update_bn(loader, swa.module, device)
    return swa.module


def swa_wins(metric: str, swa_value: float, kept_value: float) -> bool:
    """The soup replaces the kept weights only when it validates at least as well (as EMA is chosen)."""
    return not is_better(metric, kept_value, swa_value)


class BestKeeper:
    """Which weights a fold saves: the best-scoring epoch's (keep: best) or the last one's, and early stopping.

    Its state (weights, validation probabilities, scores, counters) goes into the resume checkpoint.
    """

    def __init__(self, metric: str, keep: str) -> None:
        self.metric = metric
        self.keep = keep
        self.best_score: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.saved_epoch = 0
        self.source = "raw"  # raw | ema: which weights `weights` are
        self.weights: dict[str, torch.Tensor] = {}
        self.probs = np.zeros((0, 0))

    def offer(self, epoch: int, value: float, probs: np.ndarray, state: dict[str, torch.Tensor], source: str) -> None:
        improved = self.best_score is None or is_better(self.metric, value, self.best_score)
        ties = self.best_score is not None and value == self.best_score  # equal: prefer the later, longer-trained
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if improved:
            self.best_score, self.best_epoch = value, epoch
        if self.keep == "last" or improved or ties:
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            self.probs, self.saved_epoch, self.source = probs, epoch, source

    def patience_ran_out(self, patience: int) -> bool:
        return bool(patience) and self.bad_epochs >= patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "saved_epoch": self.saved_epoch, "source": self.source, "weights": self.weights,
                "probs": torch.from_numpy(np.asarray(self.probs))}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.bad_epochs, self.saved_epoch, self.source = state["bad_epochs"], state["saved_epoch"], state["source"]
        self.weights, self.probs = state["weights"], state["probs"].numpy()


def progressive_size(sizes: list[int], epoch: int, epochs: int) -> int | None:
    """The training image size for `epoch`: `sizes` spread over equal blocks of epochs (None: no resizing)."""
    if not sizes:
        return None
    return sizes[min(epoch * len(sizes) // epochs, len(sizes) - 1)]


# --- targets: mixing, losses, class balance ---------------------------------------------------------------


class BatchMixer:
    """timm's Mixup/CutMix on a batch; returns float images and soft targets.

    Single-label: timm's one-hot soft targets (with label smoothing). Multi-label: timm's multi_label mode.
    Regression: the same image mix, with the numeric targets mixed by the same lambda.
    """

    def __init__(self, cfg: TrainConfig, num_classes: int, task: str, head: str) -> None:
        self.regression = head == "regression"
        self.mixup = Mixup(
            mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob, mode="batch",
            label_smoothing=0.0 if self.regression else cfg.label_smoothing, num_classes=num_classes,
            multi_label=task == "multi_label",
        )  # fmt: skip

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.float()  # pixels may arrive as uint8; timm mixes in place
        if self.regression or targets.ndim == 2 and not self.mixup.multi_label:
            # numbers, or dense single-label targets (train.pseudo / soft_labels: already smoothed and weighted),
            # which timm's single-label mixup_target does not take: the same image mix, targets by the same lambda
            lam = self.mixup._mix_batch(images)
            targets = targets.float()
            return images, targets * lam + targets.flip(0) * (1 - lam)
        return self.mixup(images, targets)


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Balanced loss weights: n / (C * count_c) per class; multi-label: pos_weight = negatives / positives."""
    if targets.ndim == 2:
        positives = targets.sum(axis=0)
        return torch.tensor((len(targets) - positives) / np.maximum(positives, 1), dtype=torch.float32)
    counts = np.bincount(targets, minlength=num_classes)
    return torch.tensor(len(targets) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def build_criterion(cfg: Config, train_targets: np.ndarray, mixing: bool) -> Callable[..., torch.Tensor]:
    """The loss for the task and head: CE (hard or soft targets), BCE (multi-label) or MSE (regression)."""
    weight = class_weights(train_targets, cfg.num_classes) if cfg.train.class_weights == "balanced" else None
    if cfg.train.loss in ("focal", "asymmetric", "logit_adjusted"):  # pipeline.training.losses; auto, CE, BCE here
        from pipeline.training.losses import build_loss

        return build_loss(cfg, weight, train_targets)
    if cfg.model.head == "regression":
        return lambda logits, targets: F.mse_loss(logits.squeeze(1).float(), targets.float())
    if cfg.data.task == "multi_label":
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    if not mixing:
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.train.label_smoothing)
    if weight is None:
        return SoftTargetCrossEntropy()

    def weighted_soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = weight.to(logits.device)
        return -(targets * w * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean() / (targets * w).sum(-1).mean()

    return weighted_soft_ce


class BalancedEpochSampler(EpochSampler):
    """Rows drawn with replacement, probability inverse to their class frequency, keyed by (seed, epoch).

    Each draw's key encodes its position too, so a row drawn twice in an epoch gets two augmentations.
    """

    def __init__(self, targets: np.ndarray, seed: int, drop_last_batch_of: int = 0) -> None:
        super().__init__(len(targets), seed, drop_last_batch_of)
        counts = np.bincount(targets)
        self.weights = torch.tensor(1.0 / counts[targets], dtype=torch.float64)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        picks = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        keys = (picks + self.n * (self.epoch * self.n + torch.arange(self.n))).tolist()
        if self.drop and self.n > self.drop:
            keys = keys[: self.n - self.n % self.drop]
        return keys


# --- outputs: regression head, thresholds -----------------------------------------------------------------


def two_hot(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n,) numeric predictions -> (n, C) weights on the two nearest classes whose expectation is the value."""
    y = values.float().clamp(0, num_classes - 1)
    low = y.floor().long().clamp(max=num_classes - 2)
    upper = y - low
    out = torch.zeros(len(y), num_classes, device=y.device)
    out.scatter_(1, low[:, None], (1 - upper)[:, None])
    out.scatter_add_(1, (low + 1)[:, None], upper[:, None])
    return out


def expected_class(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def ordinal_classes(probs: np.ndarray, cut_points: list[float]) -> np.ndarray:
    return np.digitize(expected_class(probs), cut_points)


def hard_probs(probs: np.ndarray, thresholds: dict[str, Any] | None) -> np.ndarray:
    """Probabilities turned into the 0/1 decisions the thresholds make (for scoring with any metric)."""
    if not thresholds or thresholds.get("kind") == "none":
        return probs
    if thresholds["kind"] == "multi_label":
        return (probs >= np.asarray(thresholds["thresholds"])).astype(np.float64)
    return np.eye(probs.shape[1])[ordinal_classes(probs, thresholds["cut_points"])]


def _score(metric: str, targets: np.ndarray, probs: np.ndarray, thresholds: dict[str, Any]) -> float:
    return METRICS[metric].fn(targets, hard_probs(probs, thresholds))


def fit_thresholds(task: str, metric: str, targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Coordinate search on the competition metric over all OOF rows, starting from 0.5 / argmax-like cuts.

    multi_label: one threshold per label; ordinal: C-1 increasing cut points on the expected class.
    Returns {"kind": "none"} where thresholds don't apply (single-label, or a threshold-free metric).
    """
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    if task == "multi_label" and uses_thresholds(metric):
        found: dict[str, Any] = {"kind": "multi_label", "thresholds": [0.5] * probs.shape[1]}
        for _ in range(2):
            for j in range(probs.shape[1]):
                best = _score(metric, targets, probs, found)
                for t in grid:
                    trial = {**found, "thresholds": [*found["thresholds"][:j], float(t), *found["thresholds"][j + 1 :]]}
                    value = _score(metric, targets, probs, trial)
                    if is_better(metric, value, best):
                        found, best = trial, value
        return found
    if task == "ordinal" and uses_thresholds(metric) and probs.shape[1] > 1:
        found = {"kind": "ordinal", "cut_points": [k + 0.5 for k in range(probs.shape[1] - 1)]}
        for _ in range(3):
            for j in range(len(found["cut_points"])):
                cuts = found["cut_points"]
                low = cuts[j - 1] if j else cuts[j] - 1.0
                high = cuts[j + 1] if j + 1 < len(cuts) else cuts[j] + 1.0
                best = _score(metric, targets, probs, found)
                for c in np.linspace(low, high, 22)[1:-1]:
                    trial = {**found, "cut_points": [*cuts[:j], round(float(c), 4), *cuts[j + 1 :]]}
                    value = _score(metric, targets, probs, trial)
                    if is_better(metric, value, best):
                        found, best = trial, value
        return found
    return {"kind": "none"}


# --- how the OOF predictions were selected (scores.json) ---------------------------------------------------


def oof_selection(cfg: Config) -> dict[str, Any]:
    """How each fold's saved weights (and so its OOF rows) were chosen, and what choosing on the scored fold bought.

    keep: last saves the final epoch: the epoch is not chosen on the fold the OOF rows score (honest CV). keep: best
    chooses it there: `selection_gain` (mean over folds of the saved epoch's validation score minus the last epoch's,
    in the metric's direction) is how optimistic CV is at most from that choice. With EMA, raw vs EMA weights are
    also chosen on the fold each epoch (`weights`). Reads fold<k>/model.safetensors metadata and fold<k>/log.csv.
    """
    import json

    import pandas as pd
    from safetensors import safe_open

    from pipeline.core import bag, paths

    out, metric = paths.for_config(cfg), cfg.metric
    folds: list[dict[str, Any]] = []
    members = [(k, seed) for k in range(cfg.folds.n_folds) for seed in bag.members(cfg)]  # a seed bag: each member
    for k, seed in members:
        weights, log_csv = out.member(seed).weights(k), out.member(seed).train_log(k)
        if not weights.exists() or not log_csv.exists():
            continue
        with safe_open(str(weights), framework="pt") as f:
            facts = json.loads((f.metadata() or {}).get("recipe", "{}"))
        history = pd.read_csv(log_csv)
        columns = [c for c in (f"valid_{metric}", f"valid_{metric}_ema") if c in history]
        good = (history[columns] * goodness(metric, 1.0)).max(axis=1)  # the better of raw and EMA, larger = better
        saved = int(facts.get("epoch", len(history)))
        gain = float(good.iloc[saved - 1] - good.iloc[-1])
        member = {"fold": k, **({"seed": seed} if seed is not None else {})}
        folds.append({**member, "epoch": saved, "of": len(history), "weights": facts.get("weights", "raw"),
                      "gain": round(gain, 6), **({"swa": facts["swa"]} if "swa" in facts else {})})  # fmt: skip
    gains = [f["gain"] for f in folds]
    return {"keep": cfg.train.keep, "ema_chosen_on_fold": bool(cfg.train.ema),
            "swa_chosen_on_fold": bool(cfg.train.swa.epochs),
            "selection_gain": round(float(np.mean(gains)), 6) if gains else None, "folds": folds}  # fmt: skip
