"""Resumable training state: what a fold's work/last.pt holds, and stopping cleanly.

A checkpoint holds everything a run needs to continue exactly where it stopped: model, optimizer,
scheduler, grad scaler and EMA states, the best epoch's weights, probabilities and score with the
early-stopping counter (pipeline.training.averaging.BestKeeper), the torch/numpy/python RNG states (mixup draws from
numpy's), the epoch and the step within it, the per-epoch history and the config fingerprint it was made
under, with the pseudo-label / distillation sources' identities (pipeline.data.sources.sources_stamp) beside
it. It is written atomically and loaded with torch.load(weights_only=True): tensors and plain containers only,
never pickled code.

SIGTERM/SIGINT (preemption, Ctrl-C, a notebook's stop button) and `train.time_budget` set a flag the
training loop checks after every step; it then saves a checkpoint and raises Stopped.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import artifacts
from pipeline.core.errors import ConfigError, UserError

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, **state: Any) -> None:
    artifacts.save_torch(path, {**state, "rng": rng_state()})


def load(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, read with weights_only=True: a file holding pickled code is refused, never run."""
    start_over = f"delete {path.parent} to start the fold over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} is not a checkpoint this pipeline wrote (it holds pickled code, refused for safety); "
                        f"{start_over}") from exc  # fmt: skip
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable checkpoint ({detail}); {start_over}") from exc
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise UserError(f"{path} is not a checkpoint this pipeline wrote; {start_over}")
    return state


def parse_budget(value: str | float | None) -> float:
    """'8h', '90m', '45s', '1h30m' or a number of seconds -> seconds; 0/None = no budget."""
    if value in (None, "", 0):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", value)
    if not parts or not any(parts.groups()):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"train.time_budget: {value!r} is not a duration like 8h, 90m, 1h30m or 3600") from None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


class StopFlag:
    """Set by SIGTERM/SIGINT or when the time budget runs out; the loop checks it after each step."""

    def __init__(self, budget_seconds: float) -> None:
        self.started = time.monotonic()
        self.budget = budget_seconds
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some notebook runners): no handler
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.reason = signal.Signals(signum).name

    def should_stop(self) -> bool:
        if self.reason is None and self.budget and time.monotonic() - self.started >= self.budget:
            self.reason = f"time budget of {self.budget:.0f} s reached"
        return self.reason is not None


def trained_fingerprint(weights: Path) -> str | None:
    return trained_metadata(weights).get("fingerprint")


def trained_sources(weights: Path) -> str:
    """The pseudo-label / distillation sources' identities the weights were trained on ("" when none)."""
    return trained_metadata(weights).get("sources", "")


def trained_metadata(weights: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} is not a safetensors file this pipeline wrote ({exc}); "
                        f"delete {weights.parent} and re-run train") from exc  # fmt: skip
