"""The learning-rate and image-size schedules: each training phase (frozen backbone, then all layers) gets its own
warmup + timm scheduler (PhasedScheduler); progressive resizing picks the epoch's image size.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.scheduler import create_scheduler_v2

from pipeline.core.budget import budget_warmup
from pipeline.core.config import TrainConfig


class PhasedScheduler:
    """timm schedulers in sequence: the frozen phase, then the unfrozen one, each with its own warmup.

    `step_update(n)` takes the number of optimizer updates done so far, as timm's schedulers do.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, lr: float, updates_per_epoch: int) -> None:
        phases = [cfg.freeze_epochs, cfg.epochs - cfg.freeze_epochs] if cfg.freeze_epochs else [cfg.epochs]
        self.starts = [sum(phases[:i]) * updates_per_epoch for i in range(len(phases))]
        self.schedulers = [
            create_scheduler_v2(
                optimizer, sched=cfg.sched, num_epochs=epochs, warmup_epochs=budget_warmup(cfg, epochs),
                min_lr=cfg.min_lr, warmup_lr=lr * 0.01, step_on_epochs=False, updates_per_epoch=updates_per_epoch,
            )[0]
            for epochs in phases
        ]  # fmt: skip

    def step_update(self, num_updates: int) -> None:
        phase = max(i for i, start in enumerate(self.starts) if num_updates >= start)
        self.schedulers[phase].step_update(num_updates - self.starts[phase])

    def state_dict(self) -> dict[str, Any]:
        return {str(i): s.state_dict() for i, s in enumerate(self.schedulers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, s in enumerate(self.schedulers):
            s.load_state_dict(state[str(i)])


def progressive_size(sizes: list[int], epoch: int, epochs: int) -> int | None:
    """The training image size for `epoch`: `sizes` spread over equal blocks of epochs (None: no resizing)."""
    if not sizes:
        return None
    return sizes[min(epoch * len(sizes) // epochs, len(sizes) - 1)]
