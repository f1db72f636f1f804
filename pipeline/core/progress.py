"""Progress of long loops (training epochs, prediction, downloads) with a rate in images per second.

On a terminal: a tqdm bar. When stderr is not a terminal (make in CI, a Kaggle Kernel's log, `nohup`,
`2> file`): plain lines every 10 % or every 30 s, whichever comes first, because a bar's carriage
returns turn such logs into one unreadable line. PIPELINE_PROGRESS=bar|plain|off forces a mode.

    for images, targets in progress(loader, total=len(dataset), desc="fold 0 epoch 1", count=len_of_batch):
        ...

`count` says how many units one item is (a batch of 32 images counts 32); by default each item counts 1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

MODES = ("bar", "plain", "off")
PLAIN_EVERY_FRACTION = 0.10
PLAIN_EVERY_SECONDS = 30.0


def len_of_batch(batch: object) -> int:
    """Images in a DataLoader batch: the length of its first element (images, targets) or of the batch itself."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)  # type: ignore[arg-type]


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (its shell is ZMQInteractiveShell), not merely when IPython is importable."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def choose_mode(stream: IO[str]) -> str:
    forced = os.environ.get("PIPELINE_PROGRESS", "").strip().lower()
    if forced in MODES:
        return forced
    if _in_notebook():  # Jupyter / Kaggle notebooks render tqdm's bars (tqdm.auto: a widget if it can)
        return "bar"
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "plain"


def format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress(
    iterable: Iterable[T],
    total: int | None,
    desc: str,
    unit: str = "img",
    count: Callable[[T], int] | None = None,
    enabled: bool = True,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of `iterable` while reporting progress (units done of `total`, units per second).

    `enabled=False` (e.g. DDP ranks other than 0) yields silently. `stream` defaults to stderr and `clock`
    to time.monotonic; both are parameters so tests can drive them.
    """
    stream = stream if stream is not None else sys.stderr
    mode = choose_mode(stream) if enabled else "off"
    if mode == "off":
        yield from iterable
        return
    if mode == "bar":
        yield from _bar(iterable, total, desc, unit, count, stream)
        return
    yield from _plain(iterable, total, desc, unit, count, stream, clock)


def _bar(
    iterable: Iterable[T], total: int | None, desc: str, unit: str, count: Callable[[T], int] | None, stream: IO[str]
) -> Iterator[T]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, file=stream) as bar:
        for item in iterable:
            yield item
            bar.update(count(item) if count else 1)  # after the caller is done with the item: the rate is true


def _plain(
    iterable: Iterable[T],
    total: int | None,
    desc: str,
    unit: str,
    count: Callable[[T], int] | None,
    stream: IO[str],
    clock: Callable[[], float],
) -> Iterator[T]:
    started = last_time = clock()
    done = last_done = 0
    step = max(total * PLAIN_EVERY_FRACTION, 1) if total else None

    def line(final: bool) -> str:
        elapsed = clock() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        where = f"{done}/{total} {unit} ({100 * done / total:.0f}%)" if total else f"{done} {unit}"
        tail = f", {format_duration(elapsed)} elapsed"
        if not final and total and rate > 0:
            tail += f", eta {format_duration((total - done) / rate)}"
        return f"{desc}: {where}, {rate:.1f} {unit}/s{tail}\n"

    for item in iterable:
        yield item
        done += count(item) if count else 1
        now = clock()
        by_share = step is not None and done - last_done >= step
        if (by_share or now - last_time >= PLAIN_EVERY_SECONDS) and not (total and done >= total):
            stream.write(line(final=False))
            stream.flush()
            last_time, last_done = now, done
    stream.write(line(final=True))
    stream.flush()
