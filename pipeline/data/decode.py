"""Decoding images into the cache's pixels (one square of `side` px per image), on every core.

Decode is the real cost of a large competition: a 4,000 x 3,000 JPEG takes ~0.1 s to decode in full, for a 258 px
square. So a JPEG is decoded at reduced size where the codec can (DCT scaling: pipeline.data.tables.load_image's
`at_least`), then resized; and the cache build spreads the images over a process pool (`cache.workers`, default
one process per core), writing their pixels in listing order through the caller's `write`.

Reads the images; writes nothing itself (pipeline.data.cache owns the cache files). `decode_all` returns the rates it
measured: images per second of wall time, and per second of one core's decode time (their ratio: the pool's
speed-up over decoding on one core).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.progress import progress as report
from pipeline.data.augment import INTERPOLATIONS
from pipeline.data.tables import load_image

log = logging.getLogger(__name__)

CHUNK = 16  # images per task: large enough to amortise the pickling, small enough to keep every process busy
POOL_FROM = 64  # fewer images than this are decoded in this process (starting a pool costs ~1 s per process)
POOL_MIN_SECONDS = 3.0  # workers: 0 (auto): a pool only when one core would take longer than this for the rest


def resize_square(image: np.ndarray, side: int, interpolation: str = "bilinear") -> np.ndarray:
    """The cache's transform, also used to check cached pixels against direct decoding."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    shrinking = image.shape[0] > side or image.shape[1] > side
    flag = cv2.INTER_AREA if shrinking else INTERPOLATIONS.get(interpolation, cv2.INTER_LINEAR)
    return cv2.resize(image, (side, side), interpolation=flag)


def decode_for_cache(path: Path, side: int, interpolation: str = "bilinear") -> np.ndarray:
    """One image as the cache holds it: uint8 (side, side, 3), decoded at reduced size where the codec can."""
    pixels = resize_square(load_image(path, at_least=side), side, interpolation)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DecodeStats:
    images: int
    seconds: float  # wall time
    cpu_seconds: float  # decode time summed over the processes
    processes: int

    @property
    def rate(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    @property
    def per_core_rate(self) -> float:
        return self.images / max(self.cpu_seconds, 1e-9)

    def describe(self) -> str:
        speedup = self.rate / self.per_core_rate
        return (f"{self.images} images in {self.seconds:.1f} s: {self.rate:.0f} img/s on {self.processes} "
                f"process(es), {speedup:.1f}x one core's decode rate ({self.per_core_rate:.0f} img/s)")  # fmt: skip


def _decode_chunk(root: Path, images: list[str], side: int, interpolation: str) -> tuple[bytes, float]:
    """A pool task: the chunk's pixels, concatenated, and the CPU seconds they took."""
    started = time.process_time()
    data = b"".join(decode_for_cache(root / image, side, interpolation).tobytes() for image in images)
    return data, time.process_time() - started


def _chunks(images: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(images), CHUNK):
        yield images[start : start + CHUNK]


def decode_all(root: Path, images: list[str], side: int, interpolation: str, write: Callable[[bytes], None],
               workers: int = 0, progress: bool = True) -> DecodeStats:  # fmt: skip
    """Decode `images` (paths under `root`) in order, handing each chunk's pixels to `write`. `workers`: processes
    (0: one per usable core); at most 2 chunks per process are in flight, so memory stays flat in the image count."""
    processes = min(workers or usable_cores(), max(1, len(images) // CHUNK))
    if len(images) < POOL_FROM:
        processes = 1
    started, cpu = time.perf_counter(), 0.0
    bar = report(iter(range(len(images))), total=len(images), desc="cache", enabled=progress)

    def advance(count: int) -> None:
        for _ in range(count):
            next(bar, None)

    chunks = _chunks(images)
    if processes > 1 and not workers:  # auto: time the first chunk here; a pool pays only for a long decode
        first = next(chunks)
        data, seconds = _decode_chunk(root, first, side, interpolation)
        write(data)
        cpu += seconds
        advance(len(first))
        if seconds / len(first) * (len(images) - len(first)) < POOL_MIN_SECONDS:
            processes = 1
    if processes == 1:
        for chunk in chunks:
            data, seconds = _decode_chunk(root, chunk, side, interpolation)
            write(data)
            cpu += seconds
            advance(len(chunk))
    else:
        # spawn, not fork: the caller may hold torch's threads, which a forked child can deadlock on
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pending = deque()
            for chunk in chunks:
                pending.append((len(chunk), pool.apply_async(_decode_chunk, (root, chunk, side, interpolation))))
                if len(pending) >= 2 * processes:
                    break
            while pending:
                count, task = pending.popleft()
                data, seconds = task.get()  # a UserError in a worker arrives here, as itself
                write(data)
                cpu += seconds
                advance(count)
                chunk = next(chunks, None)
                if chunk is not None:
                    pending.append((len(chunk), pool.apply_async(_decode_chunk, (root, chunk, side, interpolation))))
    for _ in bar:  # finish the bar
        pass
    return DecodeStats(len(images), time.perf_counter() - started, cpu, processes)
