"""The learning-rate range test (Smith 2015; fastai's lr_find) on fold 0, with the configured recipe.

Reads folds.csv and fold 0's training images; writes data/runs/<comp>/<exp>/lr_find.png (loss against LR on a
log scale, suggestion marked) and then lr_find.json: `suggested_lr`, the `lrs` and smoothed `losses` it saw,
and the `fingerprint` of the config it ran under. The LR rises exponentially from START_LR to END_LR over
STEPS updates with the training optimizer and its param groups (head/backbone ratios, layer decay; the
backbone frozen when train.freeze_epochs > 0, since that is the phase the LR starts), and stops early once
the smoothed loss passes DIVERGE x its minimum. The suggestion is fastai's "valley": a point two thirds of
the way down the longest stretch of falling loss. `train.lr: auto` trains with it (and runs the test first
when lr_find.json is missing or was made under another config). The `lr-find` stage (pipeline.training.lr_find) and
train's `train.lr: auto` both call it.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.core import artifacts, paths
from pipeline.core.bag import first_member
from pipeline.core.config import TRAINING_SECTIONS, Config, fingerprint
from pipeline.core.errors import UserError
from pipeline.training import optim
from pipeline.training.fold import prepare_fold
from pipeline.training.losses import BatchMixer, build_criterion
from pipeline.training.runtime import amp_settings

log = logging.getLogger(__name__)

START_LR, END_LR, STEPS = 1e-7, 10.0, 100
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (as fastai)


def lr_find_fingerprint(cfg: Config) -> str:
    """The config's training identity, without train.lr (the test does not depend on it)."""
    return fingerprint(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr="auto")), TRAINING_SECTIONS)


def range_test(cfg: Config, device: torch.device, steps: int = STEPS) -> tuple[list[float], list[float]]:
    """(lrs, smoothed losses) of one exponential LR sweep on fold 0's training rows."""
    t = cfg.train
    f = prepare_fold(cfg, 0, device, lr_find_fingerprint(cfg))
    optimizer = optim.build_optimizer(f.model, t, START_LR)
    optim.set_backbone_frozen(f.model, t.freeze_epochs > 0)
    amp = amp_settings(device, t.amp, t.cpu_bf16)
    scaler = torch.amp.GradScaler("cuda", enabled=amp[0] and amp[1] == torch.float16)
    mixer = BatchMixer(t, cfg.num_classes, cfg.data.task, cfg.model.head) if t.mixup or t.cutmix else None
    criterion = build_criterion(cfg, f.train_targets, mixing=mixer is not None or f.dense_targets, device=device)
    f.model.train()
    lrs: list[float] = []
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    for epoch in range(steps):  # as many passes over the rows as the sweep needs
        f.sampler.set_epoch(epoch)
        for images, targets in f.train_loader:
            lr = START_LR * (END_LR / START_LR) ** (len(lrs) / max(steps - 1, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            images, targets = images.to(device), targets.to(device)
            if mixer is not None:
                images, targets = mixer(images, targets)
            with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                loss = criterion(f.model(images), targets)
            if not torch.isfinite(loss):
                return lrs, losses
            scaler.scale(loss).backward()
            optim.clip_and_step(optimizer, scaler, f.model.parameters(), t.clip_grad)
            average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
            smoothed = average / (1 - SMOOTHING ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(smoothed)
            lowest = min(lowest, smoothed)
            if len(lrs) >= steps or (len(lrs) > 10 and smoothed > DIVERGE * lowest):
                return lrs, losses
    return lrs, losses


def suggest(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: the longest run of decreasing loss, then a point 2/3 of the way along it."""
    n = len(losses)
    if n < 5:
        raise UserError(f"lr-find: the loss diverged after {n} steps; lower train.lr candidates or check the data")
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
            start = end - run[end]
    if end == 0:
        return float(lrs[int(np.argmin(losses))] / 10)
    section = (end - start) / 3
    return float(lrs[start + int(section) + int(section / 2)])


def plot(lrs: list[float], losses: list[float], suggestion: float) -> Figure:
    figure = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (head; backbone groups at their lr_scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("LR range test, fold 0")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def find_lr(cfg: Config, device: torch.device, steps: int = STEPS) -> float:
    """Run the range test; write lr_find.png, then lr_find.json; return the suggested LR. A seed bag runs it once,
    as its first member."""
    cfg = first_member(cfg)
    out = paths.for_config(cfg)
    lrs, losses = range_test(cfg, device, steps)
    suggestion = suggest(lrs, losses)
    artifacts.save_figure(out.lr_find_png, plot(lrs, losses, suggestion))
    payload = {"suggested_lr": suggestion, "lrs": lrs, "losses": losses, "fingerprint": lr_find_fingerprint(cfg)}
    artifacts.write_json(out.lr_find_json, payload)
    log.info("lr-find: suggested lr %.3g (%d steps) -> %s", suggestion, len(lrs), out.lr_find_png)
    return suggestion


def suggested_lr(cfg: Config, device: torch.device) -> float:
    """lr_find.json's suggestion when it was made under this config (a seed bag: its first member's), else a fresh
    range test's."""
    cfg = first_member(cfg)
    out = paths.for_config(cfg)
    if out.lr_find_json.exists():
        found = artifacts.read_json(out.lr_find_json)
        if found.get("fingerprint") == lr_find_fingerprint(cfg):
            log.info("train.lr auto: %.3g from %s", found["suggested_lr"], out.lr_find_json)
            return float(found["suggested_lr"])
        log.info("train.lr auto: %s was made under another config; running the range test again", out.lr_find_json)
    return find_lr(cfg, device)
