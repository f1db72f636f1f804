"""cache: every image decoded and resized once into a uint8 memory-mapped store, shared by all folds,
epochs and TTA views.

Reads folds.csv and test.csv (data/processed/<comp>/) and the images they list; writes
data/processed/<comp>/cache/<side>px/images.u8 (N x side x side x 3, uint8, row order of index.csv)
and then index.csv (image path, source size and mtime) last, so a half-built cache never looks done.
`side` is the training size plus the margin random crops need. The cache is rebuilt only when the
image size changes (a different folder) or any source image's size/mtime changes.

Its size is known before it is built (N x side x side x 3 bytes), so free space is checked first; it is written
with ordinary sequential writes (not through a writable memory map, which dies with SIGBUS when the disk fills),
so a full disk mid-way is one `cannot write ...: no space left on device (need ~N MB)` error and no temp file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core import artifacts, paths
from pipeline.core.cli import config_from_args
from pipeline.core.errors import UserError
from pipeline.core.progress import progress as report
from pipeline.data.augment import INTERPOLATIONS
from pipeline.data.tables import load_image, read_csv

log = logging.getLogger(__name__)

MARGIN = 1.15  # random-resized crops and the eval resize sample from a slightly larger image


def cache_side(image_size: int) -> int:
    return int(round(image_size * MARGIN))


def resize_square(image: np.ndarray, side: int, interpolation: str = "bilinear") -> np.ndarray:
    """The cache's transform, also used to check cached pixels against direct decoding."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    shrinking = image.shape[0] > side or image.shape[1] > side
    flag = cv2.INTER_AREA if shrinking else INTERPOLATIONS.get(interpolation, cv2.INTER_LINEAR)
    return cv2.resize(image, (side, side), interpolation=flag)


def _fingerprint(root: Path, images: list[str]) -> pd.DataFrame:
    stats = [os.stat(root / image) for image in images]
    return pd.DataFrame(
        {"image": images, "bytes": [s.st_size for s in stats], "mtime_ns": [s.st_mtime_ns for s in stats]}
    )


class ImageCache:
    """Read access to a built cache: `cache[path]` -> uint8 (side, side, 3) array (a view into the memmap)."""

    def __init__(self, folder: Path) -> None:
        index = read_csv(folder / "index.csv", "image cache index")
        self.side = int(folder.name.removesuffix("px"))
        self.rows = {image: i for i, image in enumerate(index["image"])}
        self.array = np.memmap(
            folder / "images.u8", dtype=np.uint8, mode="r", shape=(len(index), self.side, self.side, 3)
        )

    def __contains__(self, image: str) -> bool:
        return image in self.rows

    def __getitem__(self, image: str) -> np.ndarray:
        return self.array[self.rows[image]]


class ResizeOnRead:
    """What a cache would hold, computed per read: `reader[path]` decodes the image and resizes it exactly as
    build_cache does. Prediction uses it when train.cache is on but no current cache exists (a Kaggle Kernel, a
    deleted cache), so the pixels a model sees never depend on whether the cache was built."""

    def __init__(self, root: Path, side: int, interpolation: str) -> None:
        self.root, self.side, self.interpolation = root, side, interpolation

    def __getitem__(self, image: str) -> np.ndarray:
        pixels = resize_square(load_image(self.root / image), self.side, self.interpolation)
        return np.ascontiguousarray(pixels, dtype=np.uint8)


def cache_folder(processed: Path, image_size: int) -> Path:
    return processed / "cache" / f"{cache_side(image_size)}px"


def is_current(folder: Path, root: Path, images: list[str]) -> bool:
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
                progress: bool = True) -> Path:  # fmt: skip
    """Decode every image once into folder/images.u8; index.csv is written last."""
    side = int(folder.name.removesuffix("px"))
    need = len(images) * side * side * 3
    store = folder / "images.u8"
    with artifacts.atomic_path(store, need) as tmp:  # creates the folder (or names what is in its way)
        (folder / "index.csv").unlink(missing_ok=True)  # from here on the cache is not current until rebuilt
        check_free_space(store, need - (store.stat().st_size if store.exists() else 0))
        with open(tmp, "wb") as handle:
            for image in report(images, total=len(images), desc="cache", enabled=progress):
                pixels = resize_square(load_image(root / image), side, interpolation)
                handle.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    artifacts.write_csv(folder / "index.csv", _fingerprint(root, images))
    return folder


def check_free_space(path: Path, need: int) -> None:
    """Refuse before decoding anything when the disk cannot hold `need` more bytes (plus 1% slack)."""
    free = shutil.disk_usage(path.parent).free
    if need > 0 and free < need * 1.01:
        raise UserError(
            f"cannot write {path}: no space left on device (need {artifacts.megabytes(need)}, "
            f"{artifacts.megabytes(free)} free); free some space, or set train.cache: false to decode images each epoch"
        )


def ensure_cache(
    processed: Path, root: Path, images: list[str], image_size: int, interpolation: str = "bilinear"
) -> ImageCache:
    """The cache for `images` at `image_size`, built or rebuilt when missing or stale."""
    folder = cache_folder(processed, image_size)
    if not is_current(folder, root, images):
        started = time.perf_counter()
        build_cache(folder, root, images, interpolation)
        seconds = time.perf_counter() - started
        log.info("cache: %d images decoded once into %s (%.1f s)", len(images), folder, seconds)
    return ImageCache(folder)


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
    cache = ensure_cache(out.processed, paths.raw_dir(cfg.comp), listed_images(out), size, interpolation)
    log.info("cache: %d images at %d px ready", len(cache.rows), cache.side)


def cache_for(cfg, data_cfg: dict, build: bool = True) -> ImageCache | ResizeOnRead | None:  # noqa: ANN001
    """The experiment's decoded-image cache, or None when train.cache is off. Training builds it on first use
    (`build`); prediction only reuses a current one, so an inference kernel never decodes the training images, and
    reads the images through ResizeOnRead otherwise (the same pixels the cache would give)."""
    if not cfg.train.cache:
        return None
    out = paths.for_config(cfg)
    size = max([data_cfg["input_size"][-1], *getattr(cfg.train, "progressive_sizes", [])])
    interpolation = data_cfg.get("interpolation", "bilinear")
    if not build:
        folder = cache_folder(out.processed, size)
        root = paths.raw_dir(cfg.comp)
        if out.folds_csv.exists() and out.test_csv.exists() and is_current(folder, root, listed_images(out)):
            return ImageCache(folder)
        return ResizeOnRead(root, cache_side(size), interpolation)
    return ensure_cache(out.processed, paths.raw_dir(cfg.comp), listed_images(out), size, interpolation)
