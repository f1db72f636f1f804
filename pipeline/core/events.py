"""Events a lower layer announces and a higher one hears, so training never imports reporting: `emit` calls every
handler `subscribe`d to the event's name, in order. The command layer subscribes the trackers
(pipeline.reporting.tracking.subscribe) before it runs a command.

Events: "fold_trained" (cfg: Config, fold: int) - a fold's weights, log.csv and OOF rows are final.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_handlers: dict[str, list[Callable[..., None]]] = {}


def subscribe(event: str, handler: Callable[..., None]) -> None:
    """Call `handler(**payload)` on every `emit(event, ...)`; subscribing the same handler twice keeps one."""
    handlers = _handlers.setdefault(event, [])
    if handler not in handlers:
        handlers.append(handler)


def emit(event: str, **payload: Any) -> None:
    for handler in _handlers.get(event, []):
        handler(**payload)
