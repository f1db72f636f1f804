"""Named training augmentation policies (`augment.policy`), built from albumentations 2.0.8 transforms.

- default: RandomResizedCrop (scale_min, ratio_range), flips, rotation, colour jitter from `augment`.
- light: RandomResizedCrop (scale 0.8-1) and the configured flips.
- medium: default's crop/flips/colour jitter plus an Affine (shift, scale, rotate) and a coarse dropout.
- heavy: medium plus one of grid / elastic / optical distortion, blur or noise, and more dropout.
- randaugment: crop + flips, then `augment.num_ops` ops drawn from RANDAUGMENT_OPS at `augment.magnitude` (0-10).
- trivialaugment: crop + flips, then one op from the same list at a random magnitude up to 10.
- custom: crop + flips, then `augment.custom`: albumentations transform names with arguments, e.g.
  [CLAHE, {Affine: {rotate: [-15, 15], p: 0.5}}] (each checked on a sample image when the policy is built).
Any policy adds random erasing (`augment.erasing`, A.Erasing) and coarse dropout (`augment.coarse_dropout`)
with those probabilities. Input and output are uint8 H x W x C at the backbone's size; randomness comes
only from the Compose's generator, so the loader's per-sample seeds make every policy reproducible.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import albumentations as A
import numpy as np

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only
    from pipeline.core.schema import AugmentConfig


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


def _default(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    """RandomResizedCrop with the aspect-ratio range, the configured flips, rotation and colour jitter."""
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
    return steps


def _light(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    return _crop_flips(cfg, height, width, interp, 0.8)


def _medium_policy(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    return _crop_flips(cfg, height, width, interp, cfg.scale_min) + _medium(cfg, interp)


def _heavy_policy(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    return _medium_policy(cfg, height, width, interp) + _heavy(interp)


def _randaugment(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    ops = A.SomeOf(_ops(cfg.magnitude / 10), n=cfg.num_ops, replace=False, p=1.0)
    return [*_crop_flips(cfg, height, width, interp, cfg.scale_min), ops]


def _trivialaugment(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    # one op at a magnitude drawn per image: one OneOf branch per magnitude level
    ops = A.OneOf([A.OneOf(_ops(level / 10), p=1.0) for level in range(1, 11)], p=1.0)
    return [*_crop_flips(cfg, height, width, interp, cfg.scale_min), ops]


def _custom(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    check_custom_steps(cfg)
    steps = _crop_flips(cfg, height, width, interp, cfg.scale_min)
    steps += [_custom_step(item, i) for i, item in enumerate(cfg.custom)]
    steps.append(A.Resize(height, width, interpolation=interp))  # a custom crop or pad keeps the cached size
    return steps


# augment.policy -> its transforms at (height, width); keyed by pipeline.core.schema.AUGMENT_POLICIES.
POLICIES: dict[str, Callable[[AugmentConfig, int, int, int], list[Any]]] = {
    "default": _default,
    "light": _light,
    "medium": _medium_policy,
    "heavy": _heavy_policy,
    "randaugment": _randaugment,
    "trivialaugment": _trivialaugment,
    "custom": _custom,
}


def policy_steps(cfg: AugmentConfig, height: int, width: int, interp: int) -> list[Any]:
    """The transforms of `cfg.policy`, then random erasing and coarse dropout (any policy)."""
    return POLICIES[cfg.policy](cfg, height, width, interp) + extra_steps(cfg)


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


def check_custom_steps(cfg: AugmentConfig) -> None:
    """ConfigError naming augment.custom[i] for a transform that fails on (or does not return) an RGB uint8 image.
    The names and knobs are checked when the config loads (pipeline.core.config.validate_augment)."""
    sample = np.zeros((16, 16, 3), dtype=np.uint8)
    for i, item in enumerate(cfg.custom if cfg.policy == "custom" else []):
        step = _custom_step(item, i)
        try:
            out = A.Compose([step], strict=False)(image=sample)["image"]
        except Exception as exc:
            raise ConfigError(f"augment.custom[{i}]: {type(step).__name__} fails on an RGB uint8 image: {exc}") from exc
        if out.dtype != np.uint8 or out.ndim != 3:
            raise ConfigError(f"augment.custom[{i}]: {type(step).__name__} does not return a uint8 RGB image")
