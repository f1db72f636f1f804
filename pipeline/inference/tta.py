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
    crop = crop if crop.is_floating_point() else crop.float()  # uint8 pixels: interpolate in float
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


AUTO_CANDIDATES = (
    "identity",
    "hflip",
    "vflip",
    "hvflip",
)  # what `tta.views: auto` chooses from (pipeline.inference.tta_auto)


def views_or_identity(names: list[str] | str) -> list[str]:
    """`[]` means no TTA, which is the identity view alone; `auto` means every candidate until one is chosen."""
    if names == "auto":
        return list(AUTO_CANDIDATES)
    return list(names) or ["identity"]


# Views stacked into one forward pass on accelerators, where a bigger batch runs faster than k small ones; on a
# CPU a bigger batch is slower per image (measured: 6.9 ms/img at 64, 11.4 at 256), so there views go one by one.
VIEWS_PER_FORWARD = {"cuda": 4, "mps": 4}


@torch.no_grad()
def predict_views(
    model: torch.nn.Module, batch: torch.Tensor, names: list[str], activation: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Mean of activation(model(view(batch))) over the named views, in probability space.

    Every view is built from the one decoded batch; on accelerators several are stacked into one forward pass.
    """
    names = views_or_identity(names)
    per_forward = VIEWS_PER_FORWARD.get(batch.device.type, 1)
    total = None
    for start in range(0, len(names), per_forward):
        views = [VIEWS[name](batch) for name in names[start : start + per_forward]]
        if any(v.is_floating_point() for v in views):
            views = [v if v.is_floating_point() else v.float() for v in views]
        probs = activation(model(torch.cat(views)).float())
        summed = probs.view(len(views), len(batch), *probs.shape[1:]).sum(dim=0)
        total = summed if total is None else total + summed
    return total / len(names)
