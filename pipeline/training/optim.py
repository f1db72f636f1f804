"""The optimizer side of the recipe, each a thin layer over timm.optim.

- Parameter groups: head vs backbone LR (`train.backbone_lr_factor`) and layer-wise LR decay (`train.layer_decay`)
  through timm.optim's param-group helpers; timm's schedulers honour each group's `lr_scale`, so one schedule drives
  every group at its ratio.
- Freeze-then-unfreeze (`train.freeze_epochs`, fastai's fine_tune): the backbone's weights stop receiving gradients;
  normalisation layers stay trainable, as fastai does.
- Gradient clipping (timm.utils.dispatch_clip_grad) and the optimizer step under an AMP grad scaler.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay
from timm.utils import dispatch_clip_grad

from pipeline.core.config import TrainConfig

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
