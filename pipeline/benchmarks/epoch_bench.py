"""bench, part e: real epochs of init's recipe against the model's synthetic limit, the number users feel.

Input: EPOCH_IMAGES Fashion-MNIST training images (pipeline.benchmarks.fashion, materialised as a Kaggle-layout
competition by recipe_bench.materialise), `init` and `folds` run as for a user; fold 0 trains (4/5 of the images)
and validates (1/5). Output: a dict of numbers (no files kept: the run folder is deleted afterwards).

A real epoch is the pipeline's own code, everything a user waits for: train_one_epoch (loader, steps, EMA,
progress), evaluate (the validation pass, and the EMA's where it decides) and end_epoch (log.csv, checkpoint). The
synthetic limit is a plain loop over tensors already in memory, the same model (a copy), torch's default AdamW,
the same number of training batches and one validation pass: what the model costs with no data path and no
bookkeeping. The two alternate (synthetic, real, synthetic, real, ...) so both see the same machine; efficiency =
synthetic seconds / real seconds over the whole run (the last epoch's EMA pass included).
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from typing import Any

import torch
import yaml

from pipeline.benchmarks.recipe_bench import cli, materialise
from pipeline.core import artifacts, paths
from pipeline.core.config import load_config, training_fingerprint
from pipeline.training import checkpoint, distributed, loop
from pipeline.training.runtime import output_activation

EPOCH_IMAGES, EPOCHS, EXPERIMENT = 1250, 3, "bench_epoch"


def prepare_run(n_images: int = EPOCH_IMAGES, epochs: int = EPOCHS) -> loop.FoldRun:
    """Fold 0 of init's baseline on Fashion-MNIST, CPU, no loader workers (as bench-recipe trains), fresh."""
    comp = materialise("fashion", n_images, 10)
    if not (paths.configs_dir(comp) / "baseline.yaml").exists():
        cli("init", "--comp", comp)
    baseline = paths.configs_dir(comp) / "baseline.yaml"
    cli("folds", "--config", str(baseline))
    values = yaml.safe_load(baseline.read_text())
    values["train"] = {**values["train"], "epochs": epochs, "num_workers": 0}
    values["device"] = "cpu"
    config = paths.configs_dir(comp) / f"{EXPERIMENT}.yaml"
    artifacts.write_text(config, yaml.safe_dump(values, sort_keys=False))
    cfg = load_config(config)
    shutil.rmtree(paths.for_config(cfg).run, ignore_errors=True)  # a fresh run, never a resumed one
    return loop.build_run(cfg, 0, torch.device("cpu"), training_fingerprint(cfg), distributed.SINGLE)


def real_epoch(run: loop.FoldRun) -> float:
    """Seconds of one epoch as `make train` runs it: the batches, the validation pass, the epoch's end."""
    started = time.perf_counter()
    with checkpoint.StopFlag(None) as stop:
        loop.train_one_epoch(run, stop)
    state = run.state
    row = loop.evaluate(run.f, state.keeper, state.ema, output_activation(run.f.cfg), run.amp, state.epoch)
    loop.end_epoch(run, row)
    return time.perf_counter() - started


def synthetic_epoch(model: torch.nn.Module, steps: int, batch: int, size: int, n_valid: int) -> float:
    """Seconds of the same work in a plain loop on in-memory tensors: `steps` training batches, one validation."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)  # torch's default implementation: a plain loop's
    criterion = torch.nn.CrossEntropyLoss()
    images = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8)
    labels = torch.zeros(batch, dtype=torch.long)
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for _ in range(math.ceil(n_valid / (2 * batch))):  # the validation loader's batch is 2x the training one
            model(torch.randint(0, 255, (2 * batch, 3, size, size), dtype=torch.uint8))
    return time.perf_counter() - started


def measure_epochs(n_images: int = EPOCH_IMAGES, epochs: int = EPOCHS) -> dict[str, Any]:
    """e. end-to-end img/s of real epochs (train + validation) vs the synthetic limit, alternating."""
    run = prepare_run(n_images, epochs)
    t = run.f.cfg.train
    plain = copy.deepcopy(run.f.model)
    n_train, n_valid = run.batches_per_epoch * t.batch_size, len(run.f.valid_rows)
    synthetic_s, real_s = [], []
    for _ in range(epochs):
        synthetic_s.append(synthetic_epoch(plain, run.batches_per_epoch, t.batch_size, run.f.train_size, n_valid))
        real_s.append(real_epoch(run))
    shutil.rmtree(paths.for_config(run.f.cfg).run, ignore_errors=True)
    ratios = [s / r for s, r in zip(synthetic_s, real_s, strict=True)]
    return {
        "epoch_images": {"train": n_train, "valid": n_valid, "epochs": epochs},
        "epoch_synthetic_images_per_s": round(n_train * epochs / sum(synthetic_s), 1),
        "epoch_images_per_s": round(n_train * epochs / sum(real_s), 1),
        "epoch_efficiency": round(sum(synthetic_s) / sum(real_s), 3),
        "epoch_efficiency_per_epoch": [round(r, 3) for r in ratios],
        "epoch_seconds": [round(s, 2) for s in real_s],
        "epoch_synthetic_seconds": [round(s, 2) for s in synthetic_s],
    }
