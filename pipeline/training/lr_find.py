"""lr-find: run the learning-rate range test on fold 0 and print its suggestion (pipeline.training.lr_range).

Reads folds.csv and fold 0's training images; writes data/runs/<comp>/<exp>/lr_find.png and then lr_find.json.
"""

from __future__ import annotations

import argparse

from pipeline.core import paths
from pipeline.core.cli import config_from_args
from pipeline.training.lr_range import find_lr
from pipeline.training.model import resolve_device


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    suggestion = find_lr(cfg, resolve_device(cfg.device))
    print(f"lr-find: suggested train.lr = {suggestion:.3g} (plot: {paths.for_config(cfg).lr_find_png})")
