"""albumentations pipelines built from the backbone's data config and the `augment` section.

They work on uint8 and return uint8: normalisation happens later on the model's device
(pipeline.training.model.attach_normalizer), so loaders copy 4x fewer bytes and the float maths runs on the GPU.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from pipeline.core.config import AugmentConfig
from pipeline.training.budget import budget_augment

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}


def _size_and_interp(data_cfg: dict[str, Any]) -> tuple[int, int, int]:
    _, height, width = data_cfg["input_size"]
    return height, width, INTERPOLATIONS.get(data_cfg.get("interpolation", "bilinear"), cv2.INTER_LINEAR)


def train_transform(cfg: AugmentConfig, data_cfg: dict[str, Any], epochs: int = 5) -> A.Compose:
    """Null (budget-aware) strengths are resolved for `epochs` (pipeline.training.budget.budget_augment)."""
    cfg = budget_augment(cfg, epochs)
    height, width, interp = _size_and_interp(data_cfg)
    from pipeline.data.augment_policies import extra_steps, policy_steps  # augment.policy other than default

    if cfg.policy != "default":
        return A.Compose(policy_steps(cfg, height, width, interp) + extra_steps(cfg))
    ratio = (1 / (1 + cfg.ratio_range), 1 + cfg.ratio_range)
    steps: list[Any] = [
        A.RandomResizedCrop(size=(height, width), scale=(cfg.scale_min, 1.0), ratio=ratio, interpolation=interp)
    ]
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip))
    if cfg.rotate > 0:
        steps.append(A.Rotate(limit=cfg.rotate, interpolation=interp, p=0.5))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=0.8))
    return A.Compose(steps + extra_steps(cfg))


def eval_transform(data_cfg: dict[str, Any]) -> A.Compose:
    height, width, interp = _size_and_interp(data_cfg)
    return A.Compose([A.Resize(height, width, interpolation=interp)])


def to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1))
