"""Training losses chosen by `train.loss`, built on torch, torchvision and timm.

- `auto` (default): cross-entropy (single-label, ordinal), BCE (multi-label), MSE (regression head);
  `cross_entropy` / `bce` name the same losses explicitly (single-label / multi-label only); all three are
  built by pipeline.training.recipe.build_criterion.
- `focal`: multi-label, torchvision.ops.sigmoid_focal_loss (train.focal_gamma, train.focal_alpha);
  single-label, the softmax focal loss  -sum_c t_c (1 - p_c)^gamma log p_c, which takes soft targets as is.
- `logit_adjusted`: single-label, cross-entropy on logits + log(class prior) (Menon et al. 2021, "Long-tail learning
  via logit adjustment"): the model learns balanced logits, so its argmax favours no class for being frequent.
  The priors are the fold's training shares; predictions use the raw logits (no adjustment at test time).
- `asymmetric`: timm's AsymmetricLossMultiLabel (multi-label; soft targets, pos_weight, timm's batchmean) or
  AsymmetricLossSingleLabel (single-label, label smoothing as its eps).

Every loss takes (logits (n, C), targets) where targets are class indices (n,) or soft/0-1 targets (n, C):
mixup/cutmix (timm.data.Mixup) hand soft targets, label smoothing is applied where targets are hard.
timm's single-label ASL only takes class indices, so with mixed targets it is the mixup-weighted sum of its
loss on each row's two largest target classes (the mixed pair), as mixup is applied to any hard-label loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:  # torch, timm and torchvision load when a loss is built, not when a config is checked
    import torch

    from pipeline.core.schema import Config

LOSSES = ("auto", "cross_entropy", "bce", "focal", "asymmetric", "logit_adjusted")
Loss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


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
        w = t if weight is None else t * weight.to(logits.device)
        return -(w * (1 - log_p.exp()).pow(gamma) * log_p).sum(-1).mean()

    return loss


def log_priors(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """log of each class's share of `targets` (class indices, or soft rows (n, C)); an absent class counts as one row
    so its log stays finite."""
    import torch

    counts = targets.sum(axis=0) if targets.ndim == 2 else np.bincount(targets, minlength=num_classes)
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def logit_adjusted(priors: torch.Tensor, smoothing: float, tau: float = 1.0) -> Loss:
    """Cross-entropy on logits + tau * log prior: the training target of balanced logits (hard or soft targets)."""
    import torch.nn.functional as F

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float() + tau * priors.to(logits.device), dim=-1)
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


def build_loss(cfg: Config, weight: torch.Tensor | None, train_targets: np.ndarray | None = None) -> Loss:
    """The loss `train.loss` names (not auto) for this task; `weight`: balanced class weights or None;
    `train_targets`: the fold's training targets (logit_adjusted takes its priors from them)."""
    t, multi = cfg.train, cfg.data.task == "multi_label"
    if t.loss == "logit_adjusted":
        if train_targets is None:
            raise ValueError("build_loss: logit_adjusted needs the training targets")  # a bug: the caller passes them
        return logit_adjusted(log_priors(train_targets, cfg.num_classes), t.label_smoothing)
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
