"""Building the backbone with timm, resolving its preprocessing, and choosing the device.

`model.pretrained`: true -> timm's normal hub download; false -> random init; a path -> a local
weights file loaded through timm's own pretrained-file path (pretrained_cfg_overlay=dict(file=...)),
so offline machines and Kaggle kernels use exactly the code path that online users do.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError

from pipeline.core.config import ModelConfig
from pipeline.core.errors import UserError
from pipeline.data.backbone import check_model_name
from pipeline.training.weights import hub_reachable

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


def pretrained_kwargs(pretrained: bool | str) -> dict[str, Any]:
    if pretrained is True or pretrained is False:
        return {"pretrained": pretrained}
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained: weights file {path} not found; set it to true, false or an existing file")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_logs(names: tuple[str, ...] = ("timm", "huggingface_hub")) -> Iterator[list[logging.LogRecord]]:
    """Hold what timm (and the hub client) log while weights load: timm's key report is checked, and nothing prints
    before an `error:` line. Afterwards the records are handed back to logging (a good load still says its source).
    """
    handler, saved = _Collect(), []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        yield handler.records
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


@contextlib.contextmanager
def _offline_unless_reachable(source: bool | str) -> Iterator[None]:
    """pretrained=true with no route to the hub: look in the local cache only (huggingface_hub's offline mode), so a
    missing file fails at once instead of after a minute of retries. DESIGN: never hang on a network timeout."""
    if source is not True:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    if not saved and not hub_reachable():
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _reported_keys(records: list[logging.LogRecord], kind: str) -> list[str]:
    """Keys timm reported as `Missing` or `Unexpected` after a non-strict load (its pretrained loader's log lines)."""
    for record in records:
        found = re.match(rf"{kind} keys \((.*)\) (discovered|found) while loading", record.getMessage(), re.DOTALL)
        if found:
            return found.group(1).split(", ")
    return []


def _check_loaded(model: torch.nn.Module, cfg: ModelConfig, source: str, records: list[logging.LogRecord]) -> None:
    """timm loads non-strictly when the class count differs (the head is re-initialised): the backbone must still fit.

    Without this, a file for another architecture would load nothing and train from random weights, silently.
    """
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    expected = {f"{head}.{kind}" for head in heads for kind in ("weight", "bias")}
    missing = [
        k for k in _reported_keys(records, "Missing") if k not in expected and not k.endswith("num_batches_tracked")
    ]
    if missing:
        total = len(model.state_dict())
        raise UserError(
            f"model.pretrained: {source} does not fit {cfg.name}: {len(missing)} of its {total} tensors are not in the "
            f"file (e.g. {missing[0]!r}); use weights saved from a {cfg.name}, or set model.name to the file's model"
        )


def _weights_error(exc: BaseException, cfg: ModelConfig, source: bool | str) -> UserError | None:
    """The user's side of a failed timm.create_model, or None when it looks like a bug."""
    text = str(exc)
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    if "Unsupported globals" in text or "GLOBAL" in str(exc.__cause__ or ""):
        return UserError(
            f"model.pretrained: {source} is not a plain weights file (it holds pickled code, refused for safety); "
            "use a safetensors or state-dict file"
        )
    if isinstance(exc, RuntimeError) and ("size mismatch" in text or "Missing key" in text or "Unexpected key" in text):
        return UserError(
            f"model.pretrained: {source} does not fit {cfg.name} ({first[:160]}); use weights of the same architecture"
        )
    if source is True and "No pretrained weights exist" in text:
        return UserError(f"model.pretrained: timm has no pretrained weights for {cfg.name}; set it to false or a file")
    if source is True and isinstance(exc, (OSError, ValueError, RuntimeError)):  # hub unreachable or offline
        return UserError(
            f"model.pretrained: cannot fetch {cfg.name} weights from the hub ({type(exc).__name__}); offline? "
            "set model.pretrained to a local weights file (e.g. data/weights/tf_efficientnet_lite0.safetensors, "
            "made by `python -m pipeline weights`)"
        )
    if isinstance(source, str) and isinstance(
        exc, (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError)
    ):
        return UserError(
            f"model.pretrained: {source} is not a weights file timm can read ({first}); "
            "use a .safetensors file or a .pth/.bin state dict"
        )
    return None


def size_kwargs(name: str, image_size: int | None) -> dict[str, Any]:
    """`img_size` for a model built for one input size (timm's pretrained_cfg.fixed_input_size: ViTs, Swin, LeViT)
    when train.image_size asks for another; timm then resizes its position embeddings. Other models take any size."""
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    if not image_size or pretrained_cfg is None or not getattr(pretrained_cfg, "fixed_input_size", False):
        return {}
    return {} if tuple(pretrained_cfg.input_size[-2:]) == (image_size, image_size) else {"img_size": image_size}


def check_progressive_sizes(name: str, image_size: int | None, sizes: list[int]) -> None:
    """train.progressive_sizes needs a model that takes any input size: one built for a single size (timm's
    pretrained_cfg.fixed_input_size) fails at its first forward at another, so refuse it before any work."""
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    if not sizes or pretrained_cfg is None or not getattr(pretrained_cfg, "fixed_input_size", False):
        return
    built = image_size or pretrained_cfg.input_size[-1]
    other = sorted({size for size in sizes if size != built})
    if other:
        raise UserError(
            f"train.progressive_sizes: {name} is built for one input size ({built} px, train.image_size) and cannot "
            f"train at {other} px; remove train.progressive_sizes, or pick a model that takes any size (a CNN)"
        )


def _check_size(model: torch.nn.Module | None, name: str, image_size: int, exc: BaseException | None = None) -> None:
    """A fixed-size model rebuilt for `image_size` must run at it: one dry forward, else an error naming the key."""
    if exc is None:
        training = model.training
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, image_size, image_size))
            return
        except Exception as error:  # noqa: BLE001 - any failure here means the size does not fit the architecture
            exc = error
        finally:
            model.train(training)
    native = timm.models.get_pretrained_cfg(name).input_size[-1]
    detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    raise UserError(
        f"train.image_size: {name} is built for {native} px inputs and does not run at {image_size} px ({detail}); "
        f"set train.image_size: {native} (or null), or pick a model that takes any size"
    ) from exc


def build_model(
    cfg: ModelConfig, num_classes: int, pretrained: bool | str | None = None, image_size: int | None = None
) -> torch.nn.Module:
    """timm.create_model with the configured weights; `pretrained` overrides cfg (False at predict time).
    `image_size` (train.image_size): models built for one input size are built for this one (`size_kwargs`).

    Weights files go through timm's own loader, which reads them with torch.load(weights_only=True) or safetensors:
    a file holding pickled code is refused, never run.
    """
    check_model_name(cfg.name)
    source = cfg.pretrained if pretrained is None else pretrained
    sized = size_kwargs(cfg.name, image_size)
    kwargs = {**pretrained_kwargs(source), **sized}
    with _held_logs() as records, _offline_unless_reachable(source):
        try:
            outputs = 1 if cfg.head == "regression" else num_classes  # a regression head: the class as a number
            if cfg.drop_path_rate:  # stochastic depth; only models with residual blocks take it
                kwargs = {**kwargs, "drop_path_rate": cfg.drop_path_rate}
            model = timm.create_model(cfg.name, num_classes=outputs, drop_rate=cfg.drop_rate, **kwargs)
        except TypeError as exc:
            if sized and "img_size" in str(exc):  # the architecture has no img_size argument
                _check_size(None, cfg.name, image_size, exc)
            if "drop_path_rate" in str(exc):
                raise UserError(f"model.drop_path_rate: {cfg.name} has no stochastic depth; set it to 0") from exc
            raise
        except Exception as exc:
            error = _weights_error(exc, cfg, source) if kwargs["pretrained"] else None
            if error is None:
                raise
            raise error from exc
    if sized:
        _check_size(model, cfg.name, image_size)
    if isinstance(source, str):
        _check_loaded(model, cfg, source, records)
    for record in records:  # timm's own lines, now that no error follows them
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    attach_normalizer(model)
    return model


def attach_normalizer(model: torch.nn.Module) -> None:
    """Normalise inside the model, on its device: loaders ship uint8 pixels (4x less to copy and pin) and the
    float conversion and (x - mean) / std happen on the GPU batch. Input is in 0..255 pixel scale, any dtype.
    A forward pre-hook keeps the state dict exactly timm's."""
    resolved = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(resolved["mean"]).view(1, -1, 1, 1) * 255.0
    std = torch.tensor(resolved["std"]).view(1, -1, 1, 1) * 255.0
    per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def normalize(module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        if x.device not in per_device:
            per_device[x.device] = (mean.to(x.device), std.to(x.device))
        m, s = per_device[x.device]
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return ((x.to(dtype) - m.to(dtype)) / s.to(dtype), *args[1:])

    model.register_forward_pre_hook(normalize)
    model.pixel_input = True  # marks models that take 0..255 pixels


def data_config(model: torch.nn.Module, image_size: int | None) -> dict[str, Any]:
    """mean, std, input size, interpolation, crop_pct from the weights' pretrained_cfg; size from config if set."""
    resolved = timm.data.resolve_model_data_config(model)
    if image_size:
        resolved["input_size"] = (resolved["input_size"][0], image_size, image_size)
    return resolved
