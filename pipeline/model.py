"""Building the backbone with timm, resolving its preprocessing, and choosing the device.

`model.pretrained`: true -> timm's normal hub download; false -> random init; a path -> a local
weights file loaded through timm's own pretrained-file path (pretrained_cfg_overlay=dict(file=...)),
so offline machines and Kaggle kernels use exactly the code path that online users do.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
import torch

from pipeline.config import ModelConfig
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is missing is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda requested but torch sees no CUDA GPU; use device=auto or check `make doctor`")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device: mps requested but not available; use device=auto")
    return torch.device(name)


def check_model_name(name: str) -> None:
    if name in timm.list_models() or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise UserError(f"model.name: unknown timm model {name!r}{hint}")


def pretrained_kwargs(pretrained: bool | str) -> dict[str, Any]:
    if pretrained is True or pretrained is False:
        return {"pretrained": pretrained}
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained: weights file {path} not found; set it to true, false or an existing file")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


def build_model(cfg: ModelConfig, num_classes: int, pretrained: bool | str | None = None) -> torch.nn.Module:
    """timm.create_model with the configured weights; `pretrained` overrides cfg (False at predict time)."""
    check_model_name(cfg.name)
    source = cfg.pretrained if pretrained is None else pretrained
    kwargs = pretrained_kwargs(source)
    try:
        return timm.create_model(cfg.name, num_classes=num_classes, drop_rate=cfg.drop_rate, **kwargs)
    except RuntimeError as exc:
        text = str(exc).splitlines()[0]
        if "size mismatch" in str(exc) or "Missing key" in str(exc) or "Unexpected key" in str(exc):
            raise UserError(
                f"model.pretrained: {source} does not fit {cfg.name} ({text[:160]}); use weights of the same architecture"
            ) from exc
        raise UserError(f"model.pretrained: cannot load weights for {cfg.name}: {text[:200]}") from exc
    except (OSError, ValueError) as exc:  # hub unreachable, offline, or a bad file
        if source is True:
            raise UserError(
                f"model.pretrained: cannot fetch {cfg.name} weights from the hub ({type(exc).__name__}); offline? "
                "set model.pretrained to a local weights file (e.g. data/weights/tf_efficientnet_lite0.safetensors, "
                "made by `python -m pipeline weights`)"
            ) from exc
        raise UserError(f"model.pretrained: cannot load {source}: {str(exc).splitlines()[0][:200]}") from exc
    except Exception as exc:  # unpickling refused (weights_only=True) surfaces as UnpicklingError
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise UserError(
                f"model.pretrained: {source} is not a plain weights file (it holds pickled code, refused for safety); "
                "use a safetensors or state-dict file"
            ) from exc
        raise


def data_config(model: torch.nn.Module, image_size: int | None) -> dict[str, Any]:
    """mean, std, input size, interpolation, crop_pct from the weights' pretrained_cfg; size from config if set."""
    resolved = timm.data.resolve_model_data_config(model)
    if image_size:
        resolved["input_size"] = (resolved["input_size"][0], image_size, image_size)
    return resolved
