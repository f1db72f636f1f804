"""bench: measure the data path and a real epoch against their targets, in one process, same model, batch, threads.

  a. loader images/s: the cached uint8 loader vs a naive loader (PIL open + albumentations per sample,
     normalised on the CPU, same worker count), over N_IMAGES images, REPEATS times interleaved; the median
     ratio and its spread ((max - min) / median) are reported                      target >= 5x
  b. end-to-end training images/s / training-step images/s on in-memory tensors   target >= 0.95
  c. TTA with k views: time / (k x one forward pass over in-memory tensors)      target <= 1.1
  d. time and peak (Python-heap) memory of one cached epoch at 1x, 4x, 16x GROWTH_IMAGES: time linear within
     20%, memory flat (the memory-mapped cache itself is file-backed and not counted)
  e. real epochs of init's recipe on Fashion-MNIST (train + validation + the epoch's end) vs the model's
     synthetic limit, a plain loop on in-memory tensors (pipeline.benchmarks.epoch_bench)  target >= 0.95

Writes data/bench/bench.json and prints a table plus the same numbers as one JSON line. The benchmark
images are generated JPEGs (camera-like 512x384 frames) under data/bench/images/. One torch thread unless
OMP_NUM_THREADS says otherwise: on a shared machine two threads collapse several times over.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.benchmarks.epoch_bench import measure_epochs
from pipeline.core import artifacts, paths
from pipeline.core.config import AugmentConfig, ModelConfig
from pipeline.data.augment import eval_transform, to_chw, train_transform
from pipeline.data.cache import ImageCache, build_cache, cache_side
from pipeline.data.loader import EpochSampler, ImageDataset, make_loader
from pipeline.inference.tta import predict_views
from pipeline.training.model import build_model, data_config

log = logging.getLogger(__name__)

N_IMAGES, IMAGE_SIZE, BATCH, WORKERS, MODEL = 1024, 64, 32, 0, "tf_efficientnet_lite0"
TRAIN_IMAGES = 512  # b and c: the training and TTA comparisons' share of the images (16 training steps a pass)
GROWTH_IMAGES = 256  # d: the 1x of 1x/4x/16x (the sampler holds each epoch's order as Python ints: ~36 B an image)


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n camera-like JPEG frames (smooth gradients + texture), generated once."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    yy, xx = np.mgrid[0:384, 0:512]
    for i in range(n):
        name = f"img{i:05d}.jpg"
        names.append(name)
        if (folder / name).exists():
            continue
        base = (np.sin(xx / (20 + i % 13)) + np.cos(yy / (15 + i % 7)))[..., None] * 60 + rng.integers(60, 190, 3)
        pixels = np.clip(base + rng.normal(0, 12, (384, 512, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=90)
    return names


class NaiveDataset(Dataset):
    """What a typical notebook does: open with PIL, augment and normalise per sample on the CPU, every epoch."""

    def __init__(self, root: Path, images: list[str], transform: A.Compose) -> None:
        self.root, self.images, self.transform = root, images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(Image.open(self.root / self.images[i]).convert("RGB"))
        return torch.from_numpy(to_chw(self.transform(image=image)["image"])), torch.tensor(0)


REPEATS = 3  # every timing is the best of REPEATS runs, interleaved: a shared CPU only ever slows a run down


def best_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def drain(loader: DataLoader) -> None:
    for _ in loader:
        pass


def images_per_s(loader: DataLoader, n: int) -> float:
    return n / best_seconds(lambda: drain(loader))


@dataclass
class Bench:
    """What every measurement shares: the images, their cache, the model and its data config."""

    images: list[str]
    cache_dir: Path
    cache: ImageCache
    model: torch.nn.Module
    dcfg: dict
    augment: A.Compose
    device: torch.device = torch.device("cpu")

    def loader(self) -> DataLoader:
        """Our cached training loader over the bench images."""
        labels = np.zeros(len(self.images), dtype=np.int64)
        dataset = ImageDataset(paths.bench_images(), self.images, labels, self.augment, seed=0, cache=self.cache)
        return make_loader(dataset, BATCH, WORKERS, self.device, sampler=EpochSampler(len(self.images), 0))


def measure_loader(b: Bench) -> dict[str, Any]:
    """a. the cached uint8 loader vs a naive one (PIL + albumentations + normalise per sample), REPEATS pairs."""
    naive_tf = A.Compose([*b.augment.transforms, A.Normalize(mean=b.dcfg["mean"], std=b.dcfg["std"])])
    naive = DataLoader(NaiveDataset(paths.bench_images(), b.images, naive_tf), batch_size=BATCH, num_workers=WORKERS)
    ours, n = b.loader(), len(b.images)
    pairs = [(n / best_seconds(lambda: drain(naive), 1), n / best_seconds(lambda: drain(ours), 1))
             for _ in range(REPEATS)]  # fmt: skip
    ratios = sorted(o / v for v, o in pairs)
    median = ratios[len(ratios) // 2]
    return {"naive_loader_images_per_s": round(float(np.median([v for v, _ in pairs])), 1),
            "loader_images_per_s": round(float(np.median([o for _, o in pairs])), 1),
            "loader_ratio": round(median, 2), "loader_ratios": [round(r, 2) for r in ratios],
            "loader_ratio_spread": round((ratios[-1] - ratios[0]) / median, 3)}  # fmt: skip


def measure_training(b: Bench) -> dict[str, float]:
    """b. end-to-end training vs training steps on tensors already in memory."""
    model, loader = b.model, b.loader()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    synthetic = torch.randint(0, 255, (BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.zeros(BATCH, dtype=torch.long)
    step(synthetic, labels)  # warm-up
    n_steps = TRAIN_IMAGES // BATCH
    synthetic_s, real_s = [], []
    for _ in range(REPEATS):  # interleaved, so both see the same machine
        synthetic_s.append(best_seconds(lambda: [step(synthetic, labels) for _ in range(n_steps)], 1))
        real_s.append(best_seconds(lambda: [step(x, y) for x, y in itertools.islice(loader, n_steps)], 1))
    synthetic_ips = n_steps * BATCH / min(synthetic_s)
    e2e_ips = n_steps * BATCH / min(real_s)
    return {"train_step_images_per_s": round(synthetic_ips, 1), "end_to_end_images_per_s": round(e2e_ips, 1),
            "efficiency": round(e2e_ips / synthetic_ips, 3)}  # fmt: skip


def measure_tta(b: Bench) -> dict[str, float]:
    """c. k views from one decoded batch vs k forward passes over in-memory tensors."""
    model = b.model
    model.eval()
    views = ["identity", "hflip", "vflip", "hvflip"]
    soft = lambda logits: logits.softmax(dim=1)  # noqa: E731
    images = b.images[:TRAIN_IMAGES]
    eval_ds = ImageDataset(paths.bench_images(), images, None, eval_transform(b.dcfg), cache=b.cache)
    eval_loader = make_loader(eval_ds, BATCH * 2, WORKERS, b.device)
    batches = [x for x, _ in eval_loader]
    one_pass, tta_s = [], []
    with torch.no_grad():
        model(batches[0])
        for _ in range(REPEATS):  # interleaved, so both see the same machine; the best of each
            one_pass.append(best_seconds(lambda: [model(x) for x in batches], 1))
            tta_s.append(best_seconds(lambda: [predict_views(model, x, views, soft) for x, _ in eval_loader], 1))
    return {"tta_views": len(views), "tta_overhead": round(min(tta_s) / (len(views) * min(one_pass)), 3)}


def measure_growth(b: Bench) -> dict[str, Any]:
    """d. one cached epoch (decode from cache + augment + collate) at 1x, 4x, 16x the images: time and peak memory."""
    factors, loaders, seconds = (1, 4, 16), {}, {}
    for factor in factors:
        base = b.images[:GROWTH_IMAGES]
        big = ImageCache(b.cache_dir)
        big.rows = {f"{k}:{name}": big.rows[name] for k in range(factor) for name in base}
        labels = np.zeros(len(big.rows), dtype=np.int64)
        ds = ImageDataset(paths.bench_images(), list(big.rows), labels, b.augment, seed=0, cache=big)
        loaders[factor] = make_loader(ds, BATCH, WORKERS, b.device, sampler=EpochSampler(len(big.rows), 0))
    for _ in range(REPEATS):  # the sizes interleaved, so a busy moment does not land on one of them only
        for factor in factors:
            took = best_seconds(lambda loader=loaders[factor]: drain(loader), 1)
            seconds[factor] = min(seconds.get(factor, took), took)
    growth = []
    for factor in factors:
        gc.collect()
        tracemalloc.start()
        drain(loaders[factor])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        images = factor * GROWTH_IMAGES
        growth.append({"images": images, "seconds": round(seconds[factor], 3), "peak_mb": round(peak / 2**20, 2)})
    per_image = [g["seconds"] / g["images"] for g in growth]
    return {"growth": growth, "time_nonlinearity": round(max(per_image) / min(per_image) - 1, 3),
            "peak_memory_ratio_16x": round(growth[-1]["peak_mb"] / max(growth[0]["peak_mb"], 1e-6), 2)}  # fmt: skip


def prepare() -> tuple[Bench, float]:
    """The generated images, their cache (and how fast it was built), the model."""
    torch.manual_seed(0)
    images = make_images(paths.bench_images(), N_IMAGES)
    model = build_model(ModelConfig(name=MODEL, pretrained=False), 10)
    dcfg = data_config(model, IMAGE_SIZE)
    cache_dir = paths.bench_cache(cache_side(IMAGE_SIZE))
    started = time.perf_counter()
    build_cache(cache_dir, paths.bench_images(), images, progress=False)
    cache_build_s = time.perf_counter() - started
    bench = Bench(images, cache_dir, ImageCache(cache_dir), model, dcfg, train_transform(AugmentConfig(), dcfg))
    return bench, cache_build_s


def run(args: argparse.Namespace) -> None:
    bench, cache_build_s = prepare()
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(), "workers": WORKERS, "batch": BATCH, "model": MODEL,
        "image_size": IMAGE_SIZE, "images": len(bench.images),
        "cache_build_images_per_s": round(len(bench.images) / cache_build_s, 1),
    }  # fmt: skip
    for measure in (measure_loader, measure_training, measure_tta, measure_growth):
        result.update(measure(bench))
    result.update(measure_epochs())
    targets = {
        "loader_ratio": (result["loader_ratio"], ">= 5", result["loader_ratio"] >= 5),
        "efficiency": (result["efficiency"], ">= 0.95", result["efficiency"] >= 0.95),
        "epoch_efficiency": (result["epoch_efficiency"], ">= 0.95", result["epoch_efficiency"] >= 0.95),
        "tta_overhead": (result["tta_overhead"], "<= 1.1", result["tta_overhead"] <= 1.1),
        "time_nonlinearity": (result["time_nonlinearity"], "<= 0.2", result["time_nonlinearity"] <= 0.2),
        "peak_memory_ratio_16x": (result["peak_memory_ratio_16x"], "<= 1.5", result["peak_memory_ratio_16x"] <= 1.5),
    }
    result["targets_met"] = all(ok for _, _, ok in targets.values())
    artifacts.write_json(paths.bench_json(), result)
    print(f"{'measure':<24}{'value':>10}  target   ok")
    for name, (value, target, ok) in targets.items():
        print(f"{name:<24}{value:>10}  {target:<8} {'yes' if ok else 'NO'}")
    print(
        f"loader ratio over {REPEATS} repeats: {result['loader_ratios']} (spread {result['loader_ratio_spread']}); "
        f"real epoch {result['epoch_images_per_s']:.1f} img/s vs synthetic "
        f"{result['epoch_synthetic_images_per_s']:.1f} img/s, per epoch {result['epoch_efficiency_per_epoch']}"
    )
    print(f"loader {result['loader_images_per_s']:.0f} img/s vs naive {result['naive_loader_images_per_s']:.0f} img/s; "
          f"train step {result['train_step_images_per_s']:.0f} img/s, end to end "
          f"{result['end_to_end_images_per_s']:.0f} img/s; growth {result['growth']}")  # fmt: skip
    print(json.dumps(result))
