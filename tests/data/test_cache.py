"""The decoded-image cache: built once, reused, invalidated by size or source changes, pixel-exact."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pipeline.data.decode as decode_module
import pipeline.data.loader as loader_module
from helpers.builders import write_competition
from pipeline.core.config import AugmentConfig
from pipeline.data.augment import eval_transform, train_transform
from pipeline.data.cache import ensure_cache, resize_square
from pipeline.data.loader import EpochSampler, ImageDataset, make_loader
from pipeline.data.tables import load_image
from pipeline.inference.tta import predict_views

DATA_CFG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3}


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    raw = write_competition(tmp_path / "raw", "csv", n_train=12, n_test=4)
    return raw, sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(path: Path, *args: object, **kwargs: object) -> np.ndarray:
        calls.append(str(path))
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(decode_module, "load_image", counting)
    monkeypatch.setattr(loader_module, "load_image", counting)
    return calls


def test_cache_decodes_once_and_epochs_decode_nothing(images, decode_counter, tmp_path: Path) -> None:
    raw, names = images
    cache = ensure_cache(tmp_path / "processed", raw, names, image_size=32)
    assert len(decode_counter) == len(names)  # each image decoded exactly once
    dataset = ImageDataset(raw, names, np.zeros(len(names), dtype=np.int64), train_transform(AugmentConfig(), DATA_CFG),
                           seed=0, cache=cache)  # fmt: skip
    sampler = EpochSampler(len(names), seed=0)
    loader = make_loader(dataset, 4, 0, torch.device("cpu"), sampler=sampler)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = [x for x, _ in loader]
        assert batches[0].dtype == torch.uint8 and batches[0].shape[1:] == (3, 32, 32)
    assert len(decode_counter) == len(names)  # two epochs later: still nothing decoded again
    ensure_cache(tmp_path / "processed", raw, names, image_size=32)
    assert len(decode_counter) == len(names)  # an up-to-date cache is reused, not rebuilt


def test_cache_matches_direct_decoding_and_tracks_changes(images, decode_counter, tmp_path: Path) -> None:
    raw, names = images
    cache = ensure_cache(tmp_path / "processed", raw, names, image_size=32)
    for name in names:
        assert np.array_equal(cache[name], resize_square(load_image(raw / name), cache.side))
    decoded = len(decode_counter)
    other = ensure_cache(tmp_path / "processed", raw, names, image_size=48)  # new size: a new cache
    assert other.side != cache.side and len(decode_counter) == decoded + len(names)
    os.utime(raw / names[0], ns=(1, 1))  # a source image changed: rebuild
    before = len(decode_counter)
    ensure_cache(tmp_path / "processed", raw, names, image_size=32)
    assert len(decode_counter) == before + len(names)


def test_tta_decodes_each_image_once(images, decode_counter) -> None:
    raw, names = images
    dataset = ImageDataset(raw, names, None, eval_transform(DATA_CFG))
    loader = make_loader(dataset, 8, 0, torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    soft = lambda logits: logits.softmax(dim=1)  # noqa: E731
    probs = torch.cat(
        [predict_views(model, x.float(), ["identity", "hflip", "vflip", "rot90"], soft) for x, _ in loader]
    )
    assert probs.shape == (len(names), 3)
    assert len(decode_counter) == len(names)  # four views, one decode per image


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_data_wait_warning_fires_when_the_loader_is_slowed(project: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    import time

    from helpers.builders import run_main, tiny_experiment
    from test_chain import write_competition_yaml

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, train={"cache": False})
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0

    def slow(path: Path) -> np.ndarray:
        time.sleep(0.05)  # a loader far slower than the tiny model's step
        return load_image(path)

    monkeypatch.setattr(loader_module, "load_image", slow)
    result = run_main(capsys, "train", "--config", str(config), "--fold", "0")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("waiting for data") == 1  # warned once, naming the fixes
    assert "train.num_workers" in result.stderr and "train.cache" in result.stderr
    log = pd.read_csv(project / "data/runs/toy/tiny/fold0/log.csv")
    assert log["data_wait_share"].iloc[0] > 0.5


def test_prediction_without_a_built_cache_sees_the_pixels_the_cache_holds(tmp_path: Path) -> None:
    """A Kaggle Kernel has no cache: reading through ResizeOnRead gives the cache's exact bytes, so a model predicts
    the same probabilities in the Kernel as at home (an upscaled image, where two resizes would differ)."""
    from PIL import Image

    from pipeline.data.cache import ImageCache, ResizeOnRead, build_cache, resize_square
    from pipeline.data.tables import load_image

    rng = np.random.default_rng(0)
    for name, shape in (("small.png", (23, 31, 3)), ("big.png", (90, 70, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
    images = ["small.png", "big.png"]
    folder = build_cache(tmp_path / "cache" / "46px", tmp_path, images, "bicubic", progress=False)
    cached, on_read = ImageCache(folder), ResizeOnRead(tmp_path, 46, "bicubic")
    for image in images:
        assert np.array_equal(cached[image], on_read[image])
    twice = resize_square(resize_square(load_image(tmp_path / "small.png"), 40), 46, "bicubic")
    assert not np.array_equal(twice, on_read["small.png"])  # another resize path would differ: the check can fail


def test_a_kernels_test_cache_holds_only_the_test_images_and_is_reused(project: Path, decode_counter) -> None:  # noqa: ANN001
    """An inference Kernel predicts the same test images with every fold and seed: listing_cache decodes each once
    (not the training images), reuses a current one, follows a changed image, and is None with train.cache off."""
    from helpers.builders import tiny_experiment, write_competition_config
    from pipeline.core.config import load_config
    from pipeline.data.cache import ImageCache, decode_record, listing_cache

    raw = write_competition_config(project, "csv", n_train=20, n_test=6).parents[2] / "data" / "raw" / "toy"
    test_images = sorted(p.relative_to(raw).as_posix() for p in (raw / "test").iterdir())
    cfg = load_config(tiny_experiment(project))
    cache = listing_cache(cfg, DATA_CFG, test_images + test_images[:2])  # a repeated image is cached once
    assert isinstance(cache, ImageCache) and list(cache.rows) == test_images
    assert sorted(decode_counter) == sorted(str(raw / i) for i in test_images)
    folder = project / f"data/processed/toy/test-cache/bilinear/cache/{cache.side}px"
    assert decode_record(folder)["images"] == len(test_images)
    other = listing_cache(cfg, {**DATA_CFG, "interpolation": "bicubic"}, test_images)  # a blend member's other resize
    assert isinstance(other, ImageCache) and other.store != cache.store and len(decode_counter) == 2 * len(test_images)
    decode_counter.clear()
    listing_cache(cfg, DATA_CFG, test_images)
    assert decode_counter == []  # current: reused
    os.utime(raw / test_images[0], ns=(1, 1))
    listing_cache(cfg, DATA_CFG, test_images)
    assert len(decode_counter) == len(test_images)  # an image changed: rebuilt
    assert listing_cache(load_config(tiny_experiment(project, name="off", train={"cache": False})), DATA_CFG,
                         test_images) is None  # fmt: skip
