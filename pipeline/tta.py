"""Test-time augmentation: named, deterministic views of an already decoded, normalised batch.

Each view maps a (N, C, H, W) tensor to another of the same shape, so one decoded batch serves every
view. The same views are applied to out-of-fold and test rows; probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _zoom(x: torch.Tensor, keep: float = 0.9) -> torch.Tensor:
    """Centre crop `keep` of each side and resize back: a scale view for data where flips are wrong (digits)."""
    h, w = x.shape[-2:]
    dh, dw = round(h * (1 - keep) / 2), round(w * (1 - keep) / 2)
    crop = x[..., dh : h - dh, dw : w - dw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hvflip": lambda x: x.flip(-1).flip(-2),
    "rot90": lambda x: x.rot90(1, dims=(-2, -1)),
    "rot270": lambda x: x.rot90(-1, dims=(-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "zoom": _zoom,
}


def views_or_identity(names: list[str]) -> list[str]:
    """`[]` means no TTA, which is the identity view alone."""
    return list(names) or ["identity"]


@torch.no_grad()
def predict_views(
    model: torch.nn.Module, batch: torch.Tensor, names: list[str], activation: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Mean of activation(model(view(batch))) over the named views, in probability space."""
    total = None
    for name in views_or_identity(names):
        probs = activation(model(VIEWS[name](batch)).float())
        total = probs if total is None else total + probs
    return total / len(views_or_identity(names))
