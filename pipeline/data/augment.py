"""albumentations pipelines built from the backbone's data config and the `augment` section.

They work on uint8 and return uint8: normalisation happens later on the model's device
(pipeline.training.model.attach_normalizer), so loaders copy 4x fewer bytes and the float maths runs on the GPU.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from pipeline.core.budget import budget_augment
from pipeline.core.config import AugmentConfig
from pipeline.data.augment_policies import policy_steps

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
    """`augment.policy`'s transforms (pipeline.data.augment_policies.POLICIES) at the backbone's size; null
    (budget-aware) strengths are resolved for `epochs` (pipeline.core.budget.budget_augment)."""
    height, width, interp = _size_and_interp(data_cfg)
    return A.Compose(policy_steps(budget_augment(cfg, epochs), height, width, interp))


def eval_transform(data_cfg: dict[str, Any]) -> A.Compose:
    height, width, interp = _size_and_interp(data_cfg)
    return A.Compose([A.Resize(height, width, interpolation=interp)])


def to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1))
