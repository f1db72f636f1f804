"""Named training augmentation policies (`augment.policy`), built from albumentations 2.0.8 transforms.

- default: today's pipeline.data.augment.train_transform (crop, flips, rotation, colour jitter from `augment`).
- light: RandomResizedCrop (scale 0.8-1) and the configured flips.
- medium: default's crop/flips/colour jitter plus an Affine (shift, scale, rotate) and a coarse dropout.
- heavy: medium plus one of grid / elastic / optical distortion, blur or noise, and more dropout.
- randaugment: crop + flips, then `augment.num_ops` ops drawn from RANDAUGMENT_OPS at `augment.magnitude` (0-10).
- trivialaugment: crop + flips, then one op from the same list at a random magnitude up to 10.
- custom: crop + flips, then `augment.custom`: albumentations transform names with arguments, e.g.
  [CLAHE, {Affine: {rotate: [-15, 15], p: 0.5}}] (validated by name and argument when the config loads).
Any policy adds random erasing (`augment.erasing`, A.Erasing) and coarse dropout (`augment.coarse_dropout`)
with those probabilities. Input and output are uint8 H x W x C at the backbone's size; randomness comes
only from the Compose's generator, so the loader's per-sample seeds make every policy reproducible.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import albumentations as A
import numpy as np

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only
    from pipeline.core.schema import AugmentConfig

POLICIES = ("default", "light", "medium", "heavy", "randaugment", "trivialaugment", "custom")


def _ops(m: float) -> list[A.BasicTransform]:
    """RandAugment's operations at magnitude m in [0, 1] (fraction of the strongest setting)."""
    m = max(m, 0.01)
    return [
        A.Affine(rotate=(-30 * m, 30 * m), p=1.0),
        A.Affine(shear={"x": (-17 * m, 17 * m), "y": (0, 0)}, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-17 * m, 17 * m)}, p=1.0),
        A.Affine(translate_percent={"x": (-0.3 * m, 0.3 * m), "y": (0, 0)}, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.3 * m, 0.3 * m)}, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.9 * m, contrast_limit=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.9 * m, p=1.0),
        A.ColorJitter(brightness=0, contrast=0, saturation=0.9 * m, hue=0, p=1.0),
        A.Sharpen(alpha=(0.1, 0.1 + 0.8 * m), p=1.0),
        A.Posterize(num_bits=(max(1, int(8 - 4 * m)), 8), p=1.0),
        A.Solarize(threshold_range=(1 - 0.5 * m, 1.0), p=1.0),
        A.Equalize(p=1.0),
        A.AutoContrast(p=1.0),
    ]


RANDAUGMENT_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "contrast",
                   "saturation", "sharpness", "posterize", "solarize", "equalize", "autocontrast")  # fmt: skip


def _crop_flips(cfg: AugmentConfig, height: int, width: int, interp: int, scale_min: float) -> list[Any]:
    steps: list[Any] = [A.RandomResizedCrop(size=(height, width), scale=(scale_min, 1.0), interpolation=interp)]
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(A.VerticalFlip(p=cfg.vflip))
    return steps


def _medium(cfg: AugmentConfig, interp: int) -> list[Any]:
    limit = max(cfg.rotate, 15)
    steps: list[Any] = [A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-limit, limit),
                                 interpolation=interp, p=0.5)]  # fmt: skip
    j = cfg.color_jitter or 0.2
    steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=0.8))
    steps.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                                 hole_width_range=(0.05, 0.15), p=0.25))  # fmt: skip
    return steps


def _heavy(interp: int) -> list[Any]:
    return [
        A.OneOf(
            [
                A.GridDistortion(interpolation=interp),
                A.ElasticTransform(alpha=30, sigma=6, interpolation=interp),
                A.OpticalDistortion(distort_limit=(-0.3, 0.3), interpolation=interp),
            ],
            p=0.5,
        ),  # fmt: skip
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.1))], p=0.3),
        A.CoarseDropout(num_holes_range=(2, 8), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.5),
    ]


def policy_steps(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    """The transforms of `cfg.policy` (not default: pipeline.data.augment builds that one)."""
    policy = cfg.policy
    steps = _crop_flips(cfg, height, width, interp, 0.8 if policy == "light" else cfg.scale_min)
    if policy in ("medium", "heavy"):
        steps += _medium(cfg, interp)
    if policy == "heavy":
        steps += _heavy(interp)
    if policy == "randaugment":
        steps.append(A.SomeOf(_ops(cfg.magnitude / 10), n=cfg.num_ops, replace=False, p=1.0))
    if policy == "trivialaugment":  # one op at a magnitude drawn per image: one OneOf branch per magnitude level
        steps.append(A.OneOf([A.OneOf(_ops(level / 10), p=1.0) for level in range(1, 11)], p=1.0))
    if policy == "custom":
        steps += [_custom_step(item, i) for i, item in enumerate(cfg.custom)]
        steps.append(A.Resize(height, width, interpolation=interp))  # a custom crop or pad keeps the cached size
    return steps


def extra_steps(cfg: AugmentConfig) -> list[Any]:
    """Random erasing and coarse dropout, added after any policy."""
    steps: list[Any] = []
    if cfg.erasing > 0:
        steps.append(A.Erasing(p=cfg.erasing))
    if cfg.coarse_dropout > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.1, 0.25),
                                     hole_width_range=(0.1, 0.25), p=cfg.coarse_dropout))  # fmt: skip
    return steps


def _custom_step(item: Any, i: int) -> A.BasicTransform:
    """`Name` or {Name: {argument: value}} -> the albumentations transform, or ConfigError naming it."""
    key = f"augment.custom[{i}]"
    if isinstance(item, str):
        name, args = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        name, args = next(iter(item.items()))
        args = {} if args is None else args
    else:
        raise ConfigError(f"{key}: expected a transform name or {{Name: {{argument: value}}}}, got {item!r}")
    cls = getattr(A, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        raise ConfigError(f"{key}: {name!r} is not an albumentations transform (e.g. CLAHE, Affine, GaussNoise)")
    if not isinstance(args, dict):
        raise ConfigError(f"{key}: arguments of {name} must be a mapping, got {args!r}")
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConfigError(f"{key}: {name} has no argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**args)
    except Exception as exc:  # albumentations validates arguments with pydantic
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{key}: {name}({args}) is invalid: {' '.join(first[:3])}") from exc


def validate_augment(cfg: AugmentConfig) -> None:
    """ConfigError for an unknown policy, a bad custom list, or an out-of-range knob (called by config.validate)."""
    if cfg.policy not in POLICIES:
        raise ConfigError(f"augment.policy: {cfg.policy!r} is not one of {', '.join(POLICIES)}")
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
    sample = np.zeros((16, 16, 3), dtype=np.uint8)
    for i, item in enumerate(cfg.custom if cfg.policy == "custom" else []):
        step = _custom_step(item, i)
        try:
            out = A.Compose([step], strict=False)(image=sample)["image"]
        except Exception as exc:
            raise ConfigError(f"augment.custom[{i}]: {type(step).__name__} fails on an RGB uint8 image: {exc}") from exc
        if out.dtype != np.uint8 or out.ndim != 3:
            raise ConfigError(f"augment.custom[{i}]: {type(step).__name__} does not return a uint8 RGB image")
