"""A deliberately plain "starter notebook" training loop: the reference the pipeline's default recipe must beat.

What a competitor writes in ten minutes: PIL resize to the image size, random horizontal flip, mild
brightness/contrast jitter in numpy, timm's model with the same ImageNet weights, AdamW at 1e-3 (torch's default
weight decay), cosine over every step with no warmup, no EMA, no TTA; the last epoch's weights predict.
Inputs: image arrays (uint8, HxW or HxWx3) with integer labels for training, and the images to predict.
Output: a StarterResult (per-epoch train loss, probabilities of the predicted images). Nothing is written to disk.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class StarterResult:
    losses: list[float]  # mean training loss of each epoch
    probs: np.ndarray  # (n predicted images, classes)
    seconds: float


def to_batch(images: list[np.ndarray], size: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """PIL bicubic resize to size x size, RGB, float in the weights' normalisation, NCHW."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, pixels in enumerate(images):
        image = Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BICUBIC)
        out[i] = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
    return out


def augment(batch: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """Random horizontal flip and mild brightness/contrast jitter on a normalised batch."""
    flip = rng.random(len(batch)) < 0.5
    batch = batch.copy()
    batch[flip] = batch[flip][..., ::-1]
    contrast = 1 + rng.uniform(-jitter, jitter, (len(batch), 1, 1, 1))
    brightness = rng.uniform(-jitter, jitter, (len(batch), 1, 1, 1))
    return (batch * contrast + brightness).astype(np.float32)


@torch.no_grad()
def predict(model: torch.nn.Module, batch: np.ndarray, size: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat(
        [model(torch.from_numpy(batch[i : i + size])).softmax(1) for i in range(0, len(batch), size)]
    ).numpy()


def train_starter(
    train_images: list[np.ndarray], train_labels: np.ndarray, test_images: list[np.ndarray], num_classes: int,
    weights: str, epochs: int, image_size: int = 64, batch_size: int = 32, lr: float = 1e-3, seed: int = 42,
    model_name: str = "tf_efficientnet_lite0",
) -> StarterResult:  # fmt: skip
    """Fine-tune `model_name` (weights from the local file `weights`) and predict `test_images`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(model_name, pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay={"file": weights})  # fmt: skip
    cfg = timm.data.resolve_model_data_config(model)
    mean, std = (np.asarray(cfg[k], dtype=np.float32).reshape(3, 1, 1) for k in ("mean", "std"))
    x_train, x_test = to_batch(train_images, image_size, mean, std), to_batch(test_images, image_size, mean, std)
    y_train = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * (len(x_train) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses, started = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order, total = rng.permutation(len(x_train)), 0.0
        for b in range(len(x_train) // batch_size):  # drop the last partial batch
            rows = order[b * batch_size : (b + 1) * batch_size]
            loss = loss_fn(model(torch.from_numpy(augment(x_train[rows], rng))), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        losses.append(total / (len(x_train) // batch_size))
        log.info("starter epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
    return StarterResult(losses, predict(model, x_test), time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Train the starter on fold 0's training rows of a bench competition; write its held-out accuracy (JSON)."""
    import argparse
    import json

    from pipeline.benchmarks.recipe_bench import holdout_accuracy
    from pipeline.core import artifacts, paths
    from pipeline.core.config import load_config
    from pipeline.data.tables import read_csv

    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmarks.starter")
    parser.add_argument("--comp", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--probs", help="also write the held-out probabilities here (id + one column per class)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(paths.configs_dir(args.comp) / "baseline.yaml")  # same weights, size, batch as the default
    folds = read_csv(paths.Paths(args.comp).folds_csv, "folds").astype({"fold": int})
    train = folds[folds["fold"] != 0]
    raw = paths.raw_dir(args.comp)
    test = read_csv(raw / "solution.csv", "solution")
    load = lambda rel: np.asarray(Image.open(raw / rel))  # noqa: E731
    result = train_starter(
        [load(rel) for rel in train["image"]], np.array([cfg.data.classes.index(c) for c in train["label"]]),
        [load(f"test/{i}.png") for i in test["id"]], cfg.num_classes, str(cfg.model.pretrained), args.epochs,
        image_size=cfg.train.image_size or 64, batch_size=cfg.train.batch_size,
    )  # fmt: skip
    probs = pd.DataFrame(result.probs, columns=cfg.data.classes)
    probs.insert(0, "id", test["id"].to_numpy())
    if args.probs:
        artifacts.write_csv(Path(args.probs), probs)
    row = {"holdout": holdout_accuracy(args.comp, probs), "first_loss": result.losses[0], "losses": result.losses,
           "train_seconds": round(result.seconds)}  # fmt: skip
    artifacts.write_text(Path(args.out), json.dumps(row, indent=1))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
