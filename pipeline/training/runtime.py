"""Runtime building blocks shared by every stage that runs a model: seeding, AMP, the output activation and the
no-TTA inference loop.

Nothing here reads or writes artifacts: train, lr-find, predict, the report's per-view scores and the Kernel
all call these, so a stage never imports another stage for them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import numpy as np
import torch

from pipeline.core.config import Config


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def two_hot(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n,) numeric predictions -> (n, C) weights on the two nearest classes whose expectation is the value."""
    y = values.float().clamp(0, num_classes - 1)
    low = y.floor().long().clamp(max=num_classes - 2)
    upper = y - low
    out = torch.zeros(len(y), num_classes, device=y.device)
    out.scatter_(1, low[:, None], (1 - upper)[:, None])
    out.scatter_add_(1, (low + 1)[:, None], upper[:, None])
    return out


def activation_for(task: str, head: str = "classifier", num_classes: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Model outputs -> the probabilities stages exchange (a regression head's number -> a two-hot row)."""
    if head == "regression":
        return lambda outputs: two_hot(outputs.squeeze(1), num_classes)
    return torch.sigmoid if task == "multi_label" else (lambda logits: logits.softmax(dim=1))


def output_activation(cfg: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    return activation_for(cfg.data.task, cfg.model.head, cfg.num_classes)


def amp_settings(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> tuple[bool, torch.dtype]:
    """AMP on CUDA: bf16 where the GPU supports it (no scaler needed), else fp16 with a GradScaler.
    On CPU only when asked (train.cpu_bf16): bf16 autocast."""
    if device.type == "cpu" and cpu_bf16:
        return True, torch.bfloat16
    if not enabled or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
    activation: Callable[[torch.Tensor], torch.Tensor], amp: tuple[bool, torch.dtype],
) -> np.ndarray:  # fmt: skip
    was_training = model.training
    model.eval()
    outputs = []
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            outputs.append(activation(model(images.to(device, non_blocking=True)).float()).cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy()
