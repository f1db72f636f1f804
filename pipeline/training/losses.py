"""Training losses chosen by `train.loss`, built on torch, torchvision and timm.

- `auto` (default): cross-entropy (single-label, ordinal), BCE (multi-label), MSE (regression head);
  `cross_entropy` / `bce` name the same losses explicitly (single-label / multi-label only); all three are
  built by build_criterion below.
- `focal`: multi-label, torchvision.ops.sigmoid_focal_loss (train.focal_gamma, train.focal_alpha);
  single-label, the softmax focal loss  -sum_c t_c (1 - p_c)^gamma log p_c, which takes soft targets as is.
- `logit_adjusted`: single-label, cross-entropy on logits + log(class prior) (Menon et al. 2021, "Long-tail learning
  via logit adjustment"): the model learns balanced logits, so its argmax favours no class for being frequent.
  The priors are the fold's training shares; predictions use the raw logits (no adjustment at test time).
- `asymmetric`: timm's AsymmetricLossMultiLabel (multi-label; soft targets, pos_weight, timm's batchmean) or
  AsymmetricLossSingleLabel (single-label, label smoothing as its eps).

Also here: class weights (`train.class_weights: balanced`) and timm's Mixup/CutMix on a batch (BatchMixer), which
turns targets soft.

Every loss takes (logits (n, C), targets) where targets are class indices (n,) or soft/0-1 targets (n, C):
mixup/cutmix (timm.data.Mixup) hand soft targets, label smoothing is applied where targets are hard.
timm's single-label ASL only takes class indices, so with mixed targets it is the mixup-weighted sum of its
loss on each row's two largest target classes (the mixed pair), as mixup is applied to any hard-label loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from pipeline.core.config import Config, TrainConfig

Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def _soft(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indices -> smoothed one-hot rows; soft targets pass through."""
    import torch.nn.functional as F

    if targets.ndim == 2:
        return targets.float()
    one_hot = F.one_hot(targets.long(), num_classes).float()
    return one_hot * (1 - smoothing) + smoothing / num_classes


def softmax_focal(gamma: float, smoothing: float, weight: torch.Tensor | None) -> Loss:
    import torch.nn.functional as F

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        t = _soft(targets, logits.shape[-1], smoothing)
        w = t if weight is None else t * weight
        return -(w * (1 - log_p.exp()).pow(gamma) * log_p).sum(-1).mean()

    return loss


def log_priors(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """log of each class's share of `targets` (class indices, or soft rows (n, C)); an absent class counts as one row
    so its log stays finite."""
    counts = targets.sum(axis=0) if targets.ndim == 2 else np.bincount(targets, minlength=num_classes)
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def logit_adjusted(priors: torch.Tensor, smoothing: float, tau: float = 1.0) -> Loss:
    """Cross-entropy on logits + tau * log prior: the training target of balanced logits (hard or soft targets).
    `priors` on the logits' device (build_criterion puts them there once, not a copy every step)."""
    shift = tau * priors

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float() + shift, dim=-1)
        return -(_soft(targets, logits.shape[-1], smoothing) * log_p).sum(-1).mean()

    return loss


def sigmoid_focal(gamma: float, alpha: float | None) -> Loss:
    from torchvision.ops import sigmoid_focal_loss

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        a = -1.0 if alpha is None else alpha  # torchvision: alpha < 0 switches the class balance off
        return sigmoid_focal_loss(logits.float(), targets.float(), alpha=a, gamma=gamma, reduction="mean")

    return loss


def asymmetric_single(cfg: Config) -> Loss:
    from timm.loss import AsymmetricLossSingleLabel

    t = cfg.train
    asl = AsymmetricLossSingleLabel(gamma_pos=t.asl_gamma_pos, gamma_neg=t.asl_gamma_neg, eps=t.label_smoothing,
                                    reduction="none")  # fmt: skip

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if targets.ndim == 1:
            return asl(logits, targets).mean()
        mass, pair = targets.float().topk(2, dim=-1)  # the mixed pair and its weights
        mass = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
        return (mass[:, 0] * asl(logits, pair[:, 0]) + mass[:, 1] * asl(logits, pair[:, 1])).mean()

    return loss


def build_loss(cfg: Config, weight: torch.Tensor | None, train_targets: np.ndarray | None = None,
               device: torch.device | str = "cpu") -> Loss:  # fmt: skip
    """The loss `train.loss` names (not auto) for this task; `weight`: balanced class weights or None (on `device`);
    `train_targets`: the fold's training targets (logit_adjusted takes its priors from them)."""
    t, multi = cfg.train, cfg.data.task == "multi_label"
    if t.loss == "logit_adjusted":
        if train_targets is None:
            raise ValueError("build_loss: logit_adjusted needs the training targets")  # a bug: the caller passes them
        return logit_adjusted(log_priors(train_targets, cfg.num_classes).to(device), t.label_smoothing)
    if t.loss == "focal":
        return sigmoid_focal(t.focal_gamma, t.focal_alpha) if multi else softmax_focal(t.focal_gamma, t.label_smoothing,
                                                                                      weight)  # fmt: skip
    if t.loss == "asymmetric":
        if not multi:
            return asymmetric_single(cfg)
        from timm.loss import AsymmetricLossMultiLabel

        asl = AsymmetricLossMultiLabel(gamma_neg=t.asl_gamma_neg, gamma_pos=t.asl_gamma_pos, clip=t.asl_clip,
                                       pos_weight=weight)  # fmt: skip
        return lambda logits, targets: asl(logits, targets)
    raise ValueError(f"build_loss: {t.loss} is built by recipe.build_criterion")  # a bug, config checked it


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


def build_criterion(cfg: Config, train_targets: np.ndarray, mixing: bool,
                    device: torch.device | str = "cpu") -> Callable[..., torch.Tensor]:  # fmt: skip
    """The loss for the task and head: CE (hard or soft targets), BCE (multi-label) or MSE (regression). Its tensors
    (class weights, log priors) are put on `device` here, once: a host-to-device copy every step would stall a GPU."""
    weight = class_weights(train_targets, cfg.num_classes).to(device) if cfg.train.class_weights == "balanced" else None
    if cfg.train.loss in ("focal", "asymmetric", "logit_adjusted"):
        return build_loss(cfg, weight, train_targets, device)
    if cfg.model.head == "regression":
        return lambda logits, targets: F.mse_loss(logits.squeeze(1).float(), targets.float())
    if cfg.data.task == "multi_label":
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    if not mixing:
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.train.label_smoothing)
    if weight is None:
        return SoftTargetCrossEntropy()

    def weighted_soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        w = targets * weight
        return -(w * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean() / w.sum(-1).mean()

    return weighted_soft_ce
