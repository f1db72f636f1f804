"""cache: every image decoded and resized once into a uint8 store (one fixed-size record per image, read by
offset), shared by all folds, epochs and TTA views.

Reads folds.csv and test.csv (data/processed/<comp>/) and the images they list; writes
data/processed/<comp>/cache/<side>px/images.u8 (N x side x side x 3, uint8, row order of index.csv)
and then index.csv (image path, source size and mtime) last, so a half-built cache never looks done.
`side` is the training size plus the margin random crops need. The cache is rebuilt only when the
image size changes (a different folder) or any source image's size/mtime changes (checked image by image only when
the listing changed: see below).

Its size is known before it is built (N x side x side x 3 bytes), so free space is checked first; it is written
with ordinary sequential writes (not through a writable memory map, which dies with SIGBUS when the disk fills),
so a full disk mid-way is one `cannot write ...: no space left on device (need ~N MB)` error and no temp file.

Images are decoded on every core, JPEGs at reduced size (pipeline.data.decode); the build reports its img/s against
one core's decode rate. When the cache would not fit the free disk or `cache.max_gb`, training streams from the
originals through ResizeOnRead (the same reduced decode and resize, so the same pixels) and says so once.
A stage start checks a cache without a stat per image while the listing is unchanged (pipeline.data.listing).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import artifacts, paths
from pipeline.core.cli import config_from_args
from pipeline.core.config import CacheConfig
from pipeline.core.errors import UserError
from pipeline.data.decode import decode_all, decode_for_cache, resize_square  # noqa: F401 (resize_square: re-export)
from pipeline.data.listing import image_folders, remembered, stat_key
from pipeline.data.tables import read_csv

log = logging.getLogger(__name__)

MARGIN = 1.15  # random-resized crops and the eval resize sample from a slightly larger image
DECODE_RECORD = "decode.json"  # how fast the build decoded (make plan reads it): images, seconds, per-core rate


def cache_side(image_size: int) -> int:
    return int(round(image_size * MARGIN))


def _fingerprint(root: Path, images: list[str]) -> pd.DataFrame:
    stats = [os.stat(root / image) for image in images]
    return pd.DataFrame(
        {"image": images, "bytes": [s.st_size for s in stats], "mtime_ns": [s.st_mtime_ns for s in stats]}
    )


class ImageCache:
    """Read access to a built cache: `cache[path]` -> uint8 (side, side, 3) array.

    Each read is a pread of one image's bytes, not a view into a memory map: mapped pages count in the reader's
    resident memory, so a pass over a 20 GB cache (predict on 100,000 test images) would grow it without bound."""

    def __init__(self, folder: Path) -> None:
        index = read_csv(folder / "index.csv", "image cache index")
        self.side = int(folder.name.removesuffix("px"))
        self.rows = {image: i for i, image in enumerate(index["image"])}
        self.store = folder / "images.u8"
        self._fd: tuple[int, int] | None = None  # (pid, fd): DataLoader workers open their own

    def __contains__(self, image: str) -> bool:
        return image in self.rows

    def __getitem__(self, image: str) -> np.ndarray:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.store, os.O_RDONLY))
        size = self.side * self.side * 3
        data = os.pread(self._fd[1], size, self.rows[image] * size)
        return np.frombuffer(data, dtype=np.uint8).reshape(self.side, self.side, 3)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}


class ResizeOnRead:
    """What a cache would hold, computed per read: `reader[path]` decodes the image and resizes it exactly as
    build_cache does. Prediction uses it when train.cache is on but no current cache exists (a Kaggle Kernel, a
    deleted cache), so the pixels a model sees never depend on whether the cache was built."""

    def __init__(self, root: Path, side: int, interpolation: str) -> None:
        self.root, self.side, self.interpolation = root, side, interpolation

    def __getitem__(self, image: str) -> np.ndarray:
        return decode_for_cache(self.root / image, self.side, self.interpolation)


def cache_folder(processed: Path, image_size: int) -> Path:
    return processed / "cache" / f"{cache_side(image_size)}px"


def is_current(folder: Path, root: Path, images: list[str], record: Path | None = None) -> bool:
    """The cache in `folder` holds `images` as they are now. With `record` (paths.Paths.checked) the per-image check
    runs only when the listing changed since it last passed (pipeline.data.listing): not at every stage start."""
    if record is None:
        return _is_current(folder, root, images)
    key = stat_key([folder / "index.csv", folder / "images.u8", root / ".complete", *image_folders(root, images)])
    key.append(["images", len(images), hashlib.sha256("\n".join(images).encode()).hexdigest()])
    return bool(remembered(record, f"cache:{folder.name}", key, lambda: _is_current(folder, root, images) or None))


def _is_current(folder: Path, root: Path, images: list[str]) -> bool:
    index_path = folder / "index.csv"
    if not index_path.exists() or not (folder / "images.u8").exists():
        return False
    index = read_csv(index_path, "image cache index")
    if list(index["image"]) != images:
        return False
    current = _fingerprint(root, images)
    return all(
        (index[column].astype(np.int64).to_numpy() == current[column].to_numpy()).all()
        for column in ("bytes", "mtime_ns")
    )


def build_cache(folder: Path, root: Path, images: list[str], interpolation: str = "bilinear",
                progress: bool = True, workers: int = 0) -> Path:  # fmt: skip
    """Decode every image once into folder/images.u8 (`workers` processes, 0: one per core); index.csv last."""
    side = int(folder.name.removesuffix("px"))
    need = cache_bytes(len(images), side)
    store = folder / "images.u8"
    with artifacts.atomic_path(store, need) as tmp:  # creates the folder (or names what is in its way)
        (folder / "index.csv").unlink(missing_ok=True)  # from here on the cache is not current until rebuilt
        check_free_space(store, need - (store.stat().st_size if store.exists() else 0))
        with open(tmp, "wb") as handle:
            stats = decode_all(root, images, side, interpolation, handle.write, workers, progress)
    artifacts.write_json(folder / DECODE_RECORD, {"images": stats.images, "seconds": round(stats.seconds, 3),
                                                 "cpu_seconds": round(stats.cpu_seconds, 3),
                                                 "processes": stats.processes, "side": side,
                                                 "per_core_images_per_s": round(stats.per_core_rate, 2)})  # fmt: skip
    artifacts.write_csv(folder / "index.csv", _fingerprint(root, images))
    log.info("cache: %s -> %s", stats.describe(), folder)
    return folder


def cache_bytes(n_images: int, side: int) -> int:
    return n_images * side * side * 3


def check_free_space(path: Path, need: int) -> None:
    """Refuse before decoding anything when the disk cannot hold `need` more bytes (plus 1% slack)."""
    free = shutil.disk_usage(path.parent).free
    if need > 0 and free < need * 1.01:
        raise UserError(
            f"cannot write {path}: no space left on device (need {artifacts.megabytes(need)}, "
            f"{artifacts.megabytes(free)} free); free some space, or set train.cache: false to decode images each "
            "epoch (training streams from the originals by itself when the cache won't fit)"
        )


def ensure_cache(
    processed: Path, root: Path, images: list[str], image_size: int, interpolation: str = "bilinear",
    workers: int = 0, record: Path | None = None,
) -> ImageCache:  # fmt: skip
    """The cache for `images` at `image_size`, built or rebuilt when missing or stale."""
    folder = cache_folder(processed, image_size)
    if not is_current(folder, root, images, record):
        build_cache(folder, root, images, interpolation, workers=workers)
    return ImageCache(folder)


def too_large(n_images: int, side: int, folder: Path, max_gb: float) -> str | None:
    """Why a cache of `n_images` would not fit (cache.max_gb, or the free disk with 1% slack), else None."""
    need = cache_bytes(n_images, side)
    if max_gb and need > max_gb * 1e9:
        return f"{artifacts.megabytes(need)}, above cache.max_gb: {max_gb:g}"
    existing = folder / "images.u8"
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(probe).free + (existing.stat().st_size if existing.exists() else 0)
    if need * 1.01 > free:
        return f"{artifacts.megabytes(need)}, {artifacts.megabytes(free)} free on {probe}'s disk"
    return None


_SAID: set[str] = set()  # the streaming notice, once per process (a stage may prepare several folds)


def streaming(root: Path, side: int, interpolation: str, why: str) -> ResizeOnRead:
    if why not in _SAID:
        _SAID.add(why)
        log.warning("cache: not built (%s): streaming from the original images instead, each decoded at reduced "
                    "size and resized as the cache would (slower per epoch; raise cache.max_gb or free disk space "
                    "to cache)", why)  # fmt: skip
    return ResizeOnRead(root, side, interpolation)


def listed_images(out: paths.Paths) -> list[str]:
    """Every train and test image of the competition, in a fixed order."""
    for table in (out.folds_csv, out.test_csv):
        if not table.exists():
            raise UserError(f"{table} not found; run `make folds CONFIG=...` first")
    images = list(read_csv(out.folds_csv, "folds table")["image"]) + list(
        read_csv(out.test_csv, "test listing")["image"]
    )
    return list(dict.fromkeys(images))


def run(args: argparse.Namespace) -> None:
    import timm

    from pipeline.data.backbone import check_model_name

    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    check_model_name(cfg.model.name)
    pretrained = timm.models.get_pretrained_cfg(cfg.model.name)
    size = cfg.train.image_size or pretrained.input_size[-1]
    interpolation = pretrained.interpolation or "bilinear"  # what training's data config resolves to
    images, folder = listed_images(out), cache_folder(out.processed, size)
    if cfg.cache.max_gb and not is_current(folder, out.raw, images, out.checked):
        why = too_large(len(images), cache_side(size), folder, cfg.cache.max_gb)
        if why:  # the user's limit: nothing to build; training and prediction stream (a full disk stays an error here)
            streaming(out.raw, cache_side(size), interpolation, why)
            return
    cache = ensure_cache(out.processed, out.raw, images, size, interpolation, cfg.cache.workers, out.checked)
    log.info("cache: %d images at %d px ready", len(cache.rows), cache.side)


def cache_or_stream(out: paths.Paths, images: list[str], image_size: int, interpolation: str,
                    settings: CacheConfig, processed: Path | None = None) -> ImageCache | ResizeOnRead:  # fmt: skip
    """The current cache, else a new one; or, when it would not fit (disk, cache.max_gb), the originals streamed.
    `processed`: another home for the cache than the competition's (its check is then image by image)."""
    home, record = (out.processed, out.checked) if processed is None else (processed, None)
    folder, root = cache_folder(home, image_size), out.raw
    if not is_current(folder, root, images, record):
        why = too_large(len(images), cache_side(image_size), folder, settings.max_gb)
        if why:
            return streaming(root, cache_side(image_size), interpolation, why)
    return ensure_cache(home, root, images, image_size, interpolation, settings.workers, record)


def cache_settings(cfg, data_cfg: dict) -> tuple[int, str]:  # noqa: ANN001
    """(image size, interpolation) the experiment's cache is built at: the largest training size, timm's resize."""
    size = max([data_cfg["input_size"][-1], *getattr(cfg.train, "progressive_sizes", [])])
    return size, data_cfg.get("interpolation", "bilinear")


def listing_cache(cfg, data_cfg: dict, images: list[str]) -> ImageCache | ResizeOnRead | None:  # noqa: ANN001
    """A cache of only `images` (a Kaggle Kernel's test listing) in data/processed/<comp>/test-cache/<interpolation>/,
    so every fold and seed that predicts them reads each image decoded once, not once per model (blend members with
    another size or resize get their own); streamed when it would not fit; None when train.cache is off. The training
    images are never decoded for it."""
    if not cfg.train.cache:
        return None
    out = paths.for_config(cfg)
    size, interpolation = cache_settings(cfg, data_cfg)
    return cache_or_stream(out, list(dict.fromkeys(images)), size, interpolation, cfg.cache,
                           processed=out.processed / "test-cache" / interpolation)  # fmt: skip


def decode_record(folder: Path) -> dict | None:
    """What the cache build in `folder` measured (DECODE_RECORD), or None when it has none."""
    try:
        record = artifacts.read_json(folder / DECODE_RECORD)
        return record if float(record["per_core_images_per_s"]) > 0 else None
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None


def cache_for(cfg, data_cfg: dict, build: bool = True) -> ImageCache | ResizeOnRead | None:  # noqa: ANN001
    """The experiment's decoded-image cache, or None when train.cache is off. Training builds it on first use
    (`build`); prediction only reuses a current one, so an inference kernel never decodes the training images, and
    reads the images through ResizeOnRead otherwise (the same pixels the cache would give)."""
    if not cfg.train.cache:
        return None
    out = paths.for_config(cfg)
    size, interpolation = cache_settings(cfg, data_cfg)
    folder, root = cache_folder(out.processed, size), paths.raw_dir(cfg.comp)
    if not build:
        if out.folds_csv.exists() and out.test_csv.exists() and is_current(folder, root, listed_images(out),
                                                                            out.checked):  # fmt: skip
            return ImageCache(folder)
        return ResizeOnRead(root, cache_side(size), interpolation)
    return cache_or_stream(out, listed_images(out), size, interpolation, cfg.cache)
