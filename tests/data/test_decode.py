"""Decoding for the cache at scale: JPEGs decoded at reduced size stay close to a full decode + resize, a process
pool writes exactly what one process writes, a cache that would not fit streams (said once), and a stage start
re-checks the listing only when it changed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.data.cache as cache_module
import pipeline.data.folds_record as folds_record_module
from pipeline.benchmarks.scale_data import encode, photo
from pipeline.core.config import CacheConfig
from pipeline.core.paths import Paths
from pipeline.data.cache import ImageCache, ResizeOnRead, build_cache, cache_or_stream, is_current
from pipeline.data.decode import POOL_FROM, decode_for_cache, resize_square
from pipeline.data.tables import load_image


@pytest.fixture
def large_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "large.jpg"
    path.write_bytes(encode(photo(np.random.default_rng(0), 2000, 1500, 2)))
    return path


@pytest.mark.parametrize("side", [74, 258, 437])
def test_reduced_jpeg_decode_is_close_to_a_full_decode_and_resize(large_jpeg: Path, side: int) -> None:
    reduced = load_image(large_jpeg, at_least=side)
    assert reduced.shape[0] < 1500 and min(reduced.shape[:2]) >= side  # really reduced, never below the target
    full = resize_square(load_image(large_jpeg), side).astype(int)
    diff = np.abs(decode_for_cache(large_jpeg, side).astype(int) - full)
    # within 2 of 255 levels on average (the texture aliases a little differently at 1/8 scale), no outliers
    assert diff.mean() < 2 and np.percentile(diff, 99.9) <= 16, (diff.mean(), diff.max())


def test_reduced_decode_keeps_exif_rotation_and_non_jpegs(tmp_path: Path, large_jpeg: Path) -> None:
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.open(large_jpeg).save(rotated, exif=exif, quality=90)
    upright = load_image(large_jpeg, at_least=100).shape[:2]
    assert upright == (-(-1500 // 8), 2000 // 8) and load_image(rotated, at_least=100).shape[:2] == upright[::-1]
    png = tmp_path / "frame.png"
    Image.open(large_jpeg).save(png)
    assert load_image(png, at_least=100).shape == (1500, 2000, 3)  # only JPEG's codec can scale while decoding


def small_photos(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        names.append(f"train/p{i:03d}.jpg")
        (root / "train").mkdir(parents=True, exist_ok=True)
        (root / names[-1]).write_bytes(encode(photo(rng, 120 + i % 50, 90 + i % 30, i % 3)))
    return names


def test_a_process_pool_writes_what_one_process_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = small_photos(tmp_path, POOL_FROM + 5)
    caplog.set_level(logging.INFO)
    one = build_cache(tmp_path / "one" / "46px", tmp_path, names, progress=False, workers=1)
    pool = build_cache(tmp_path / "pool" / "46px", tmp_path, names, progress=False, workers=2)
    assert (one / "images.u8").read_bytes() == (pool / "images.u8").read_bytes()
    assert "on 2 process(es)" in caplog.text and "one core's decode rate" in caplog.text
    cached = ImageCache(pool)
    assert np.array_equal(cached[names[7]], ResizeOnRead(tmp_path, 46, "bilinear")[names[7]])


def test_auto_workers_start_a_pool_only_when_one_core_would_take_long(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """workers: 0 times the first chunk in this process: small images that one core decodes in well under
    POOL_MIN_SECONDS never pay a pool's start-up; the same images under a tiny threshold go to the pool, and both
    write the same bytes in the same order."""
    import pipeline.data.decode as decode_module

    names = small_photos(tmp_path, POOL_FROM + 40)
    monkeypatch.setattr(decode_module, "usable_cores", lambda: 2)
    written: dict[str, list[bytes]] = {"here": [], "pool": []}
    here = decode_module.decode_all(tmp_path, names, 46, "bilinear", written["here"].append, workers=0, progress=False)
    monkeypatch.setattr(decode_module, "POOL_MIN_SECONDS", 0.0)
    pool = decode_module.decode_all(tmp_path, names, 46, "bilinear", written["pool"].append, workers=0, progress=False)
    assert here.processes == 1 and pool.processes == 2
    assert b"".join(written["here"]) == b"".join(written["pool"]) and here.images == pool.images == len(names)


def test_a_cache_above_max_gb_streams_the_originals_and_says_so_once(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = Paths("big")
    names = small_photos(out.raw, 6)
    caplog.set_level(logging.INFO)
    tiny = CacheConfig(max_gb=1e-6)  # 1 kB
    first = cache_or_stream(out, names, 40, "bilinear", tiny)
    second = cache_or_stream(out, names, 40, "bilinear", tiny)
    assert isinstance(first, ResizeOnRead) and isinstance(second, ResizeOnRead)
    assert caplog.text.count("streaming from the original images") == 1, caplog.text
    assert "above cache.max_gb" in caplog.text
    assert not (out.processed / "cache").exists()
    built = cache_or_stream(out, names, 40, "bilinear", CacheConfig())
    assert isinstance(built, ImageCache)
    assert all(np.array_equal(built[name], first[name]) for name in names)  # streamed pixels are the cache's


def test_a_stage_start_rechecks_images_only_when_the_listing_changed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Paths("toy")
    names = small_photos(out.raw, 5)
    (out.raw / ".complete").write_text("x")
    folder = build_cache(out.processed / "cache" / "46px", out.raw, names, progress=False)
    checks: list[int] = []
    full_check = cache_module._is_current
    monkeypatch.setattr(cache_module, "_is_current", lambda *a: checks.append(1) or full_check(*a))
    for _ in range(3):
        assert is_current(folder, out.raw, names, out.checked)
    assert len(checks) == 1  # the first start checks every image; the next ones trust the unchanged listing
    (out.raw / "train" / "new.jpg").write_bytes((out.raw / names[0]).read_bytes())  # the folder changed
    assert is_current(folder, out.raw, names, out.checked) and len(checks) == 2
    os.utime(out.raw / ".complete")  # a new download
    assert is_current(folder, out.raw, names, out.checked) and len(checks) == 3
    assert not is_current(folder, out.raw, [*names, "train/new.jpg"], out.checked) and len(checks) == 4


def test_the_train_table_digest_is_remembered_until_a_class_folder_changes(
    project: Path,
    competition,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from pipeline.core.config import DataConfig

    raw = competition("folder_per_class")
    data, out = DataConfig(train_csv=None, train_dir="train", image_ext=".png"), Paths("toy")
    digests: list[str] = []
    digest = folds_record_module.table_digest
    monkeypatch.setattr(folds_record_module, "table_digest", lambda *a: digests.append(1) or digest(*a))
    first = folds_record_module.remembered_digest(data, out)
    assert folds_record_module.remembered_digest(data, out) == first and len(digests) == 1
    (raw / "train" / "cat" / "extra.png").write_bytes((raw / "train" / "cat" / "tr000.png").read_bytes())
    changed = folds_record_module.remembered_digest(data, out)
    assert changed != first and len(digests) == 2
