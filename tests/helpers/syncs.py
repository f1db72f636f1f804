"""Count host synchronisations: calls that read a tensor's value on the host (.item(), .cpu(), .tolist(),
.numpy(), float(t), int(t), bool(t)), through patched torch.Tensor methods. On a GPU each one waits for every
queued kernel; on the CPU they are free, so only counting them shows where the GPU path would stall.

    with SyncCounter() as syncs:
        ...
    syncs.calls  # [(method, "file:line" of the caller), ...]
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")
TORCH_DIR = str(Path(torch.__file__).parent)


class SyncCounter:
    """Patches the methods while active; `paused()` stops counting (e.g. inside the data loader, whose tensors live
    on the host in a real run: worker processes decode and collate on the CPU)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.counting = True
        self._saved: dict[str, Callable[..., Any]] = {}

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self.counting and not torch.compiler.is_compiling():
                self.calls.append((name, self._caller()))
            return original(tensor, *args, **kwargs)

        return wrapper

    @staticmethod
    def _caller() -> str:
        """The first frame outside torch itself: the code that asked for the value."""
        for frame in reversed(traceback.extract_stack(sys._getframe(2), limit=12)):
            if not frame.filename.startswith(TORCH_DIR):
                return f"{Path(frame.filename).name}:{frame.lineno}"
        return "torch"

    def __enter__(self) -> SyncCounter:
        for name in METHODS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)

    def paused(self, iterable: Any) -> Iterator[Any]:
        """Iterate `iterable` without counting what producing each item costs."""
        self.counting = False
        try:
            iterator = iter(iterable)  # a DataLoader draws its base seed here (a host tensor's .item())
        finally:
            self.counting = True
        while True:
            self.counting = False
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.counting = True
            yield item
