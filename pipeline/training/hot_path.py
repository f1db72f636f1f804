"""What the training loop does on every step, kept off the host: no synchronisation, no per-step rebuilding.

On a GPU every host read of a device value (`.item()`, `float(t)`, `bool(t)`, `.cpu()`, `.tolist()`) waits for
all queued kernels, so the next step cannot be queued behind the current one. Per-step Python work (walking the
module tree, building dicts) adds milliseconds to steps that take about ten on a GPU. Reads nothing, writes
nothing; pipeline.training.loop uses these pieces:

- StepLosses: each batch's loss copied into a small device buffer; the host reads the buffer every SYNC_EVERY
  steps (one synchronisation), before a checkpoint and at the end of an epoch, and only then checks finiteness
  (the first non-finite step is still named exactly). A checkpoint is never written over unread losses, so a
  diverged run keeps its last finite checkpoint as before.
- CachedEma: timm's ModelEmaV3 with its two lists of tensors built once; timm builds both models' state_dicts
  on every update (two walks of ~300 modules).
- fused_optimizer_args: torch's fused Adam/AdamW kernel (one kernel for all parameters, CPU and CUDA) instead
  of the per-parameter loop torch defaults to on the CPU.
- stop_check_due: under DDP, the collective "stop now?" flag (a broadcast and a read) every SYNC_EVERY steps.
- ema_scored: whether an epoch's EMA weights need a validation pass (only where the score decides something).

`docs/performance.md` has the per-step profile these came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from timm.utils import ModelEmaV3

from pipeline.core.config import TrainConfig

SYNC_EVERY = 32  # steps between host reads of the loss buffer (and, under DDP, of the stop flag)


@dataclass
class StepLosses:
    """Per-batch losses and batch sizes since the last read; the losses stay on the device until `read`."""

    device: torch.device
    size: int = 0  # 0: SYNC_EVERY as it is when the run starts
    buffer: torch.Tensor = field(init=False)
    counts: list[int] = field(default_factory=list)
    first_step: int = 0  # the step (1-based, within the epoch) of buffer[0]

    def __post_init__(self) -> None:
        self.size = self.size or SYNC_EVERY
        self.buffer = torch.zeros(self.size, device=self.device, dtype=torch.float32)

    def record(self, loss: torch.Tensor, n: int, step: int) -> None:
        """Queue `loss` (a 0-d tensor, batch of `n`, the epoch's step `step`) without reading it."""
        if not self.counts:
            self.first_step = step
        self.buffer[len(self.counts)].copy_(loss.detach(), non_blocking=True)
        self.counts.append(n)

    @property
    def full(self) -> bool:
        return len(self.counts) >= self.size

    def read(self) -> tuple[float, tuple[int, float] | None]:
        """One synchronisation: (sum of loss x batch size over the finite steps read, (step, loss) of the first
        non-finite one or None), and the buffer empties."""
        if not self.counts:
            return 0.0, None
        values = self.buffer[: len(self.counts)].tolist()  # the one host read (listed in tests/training/test_syncs)
        total, bad = 0.0, None
        for i, (value, n) in enumerate(zip(values, self.counts, strict=True)):
            if not math.isfinite(value):
                bad = (self.first_step + i, value)
                break
            total += value * n
        self.counts.clear()
        return total, bad


class CachedEma(ModelEmaV3):
    """ModelEmaV3 whose update walks two prepared tensor lists instead of two fresh state_dicts per step.

    The lists hold the models' own tensors (state_dict's detached views share their storage), so they stay right
    while parameters change in place (optimizer steps, load_state_dict); rebuilt for another model object.
    """

    def __init__(self, model: torch.nn.Module, **kwargs: object) -> None:
        super().__init__(model, **kwargs)
        self._lists: tuple[int, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None
        self._lists = None

    def _prepare(self, model: torch.nn.Module) -> tuple:
        if self._lists is None or self._lists[0] != id(model):
            pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
            floats = [(e, m) for e, m in pairs if e.is_floating_point()]
            others = [(e, m) for e, m in pairs if not e.is_floating_point()]
            self._lists = (id(model), [e for e, _ in floats], [m for _, m in floats], [e for e, _ in others],
                           [m for _, m in others])  # fmt: skip
        return self._lists

    @torch.no_grad()
    def apply_update_(self, model: torch.nn.Module, decay: float) -> None:
        if not self.foreach:  # EMA kept on another device than the model: timm's own per-tensor path
            super().apply_update_(model, decay)
            return
        _, ema_floats, model_floats, ema_others, model_others = self._prepare(model)
        if ema_others:
            torch._foreach_copy_(ema_others, model_others)  # BatchNorm's num_batches_tracked
        self._foreach_lerp_(ema_floats, model_floats, weight=1.0 - decay)


def fused_optimizer_args(opt: str, params: list[torch.nn.Parameter]) -> dict[str, bool]:
    """{"fused": True} for torch's Adam/AdamW when every parameter is a floating tensor on the CPU or CUDA (where
    torch has the fused kernel); {} otherwise (other optimizers, MPS, mixed devices)."""
    if opt.lower() not in ("adam", "adamw"):  # timm maps these to torch.optim.Adam / AdamW
        return {}
    devices = {p.device.type for p in params}
    if not devices <= {"cpu", "cuda"} or not all(p.is_floating_point() for p in params):
        return {}
    return {"fused": True}


def stop_check_due(step: int, last_step: int, distributed: bool) -> bool:
    """Whether this step asks every rank "stop now?": each step alone (free), every SYNC_EVERY steps under DDP
    (a broadcast and a host read) and always at the epoch's last step."""
    return not distributed or step % SYNC_EVERY == 0 or step >= last_step


def ema_scored(epoch: int, cfg: TrainConfig) -> bool:
    """Whether epoch `epoch` (0-based) scores the EMA weights on the validation rows: every epoch when the score
    chooses the kept epoch (keep: best) or stops the run (early_stopping), else only the last epoch, where raw vs
    EMA is chosen. An EMA pass costs as much as the raw one; on other epochs its score decided nothing."""
    return cfg.keep == "best" or bool(cfg.early_stopping) or epoch + 1 >= cfg.epochs
