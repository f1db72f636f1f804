"""Helpers every stage's `run(args)` uses to turn CLI arguments into a config."""

from __future__ import annotations

import argparse

from pipeline.config import Config, load_config
from pipeline.errors import UserError

# Stages that build or never read folds.csv; every other stage checks it still matches competition.yaml, once, early.
NOT_READING_FOLDS = ("download", "init", "folds", "weights", "info", "doctor", "submit", "scores", "kaggle-push")


def config_from_args(args: argparse.Namespace) -> Config:
    if not args.config:
        raise UserError(f"{args.command}: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    cfg = load_config(args.config, args.overrides)
    sweep_temps(cfg)
    if getattr(args, "command", None) not in NOT_READING_FOLDS:
        from pipeline.folds import check_folds_current  # folds imports this module

        check_folds_current(cfg)
    return cfg


def sweep_temps(cfg: Config) -> None:
    """Temp files of killed runs of this competition and experiment go when a stage starts (not those of live ones)."""
    from pipeline import artifacts, paths

    out = paths.for_config(cfg)
    artifacts.sweep_stale_temps([out.processed, out.run, out.submission.parent])


def folds_from_args(args: argparse.Namespace, cfg: Config) -> list[int]:
    if args.fold is None:
        return list(range(cfg.folds.n_folds))
    if not 0 <= args.fold < cfg.folds.n_folds:
        raise UserError(f"--fold {args.fold}: folds.n_folds is {cfg.folds.n_folds}, so use 0..{cfg.folds.n_folds - 1}")
    return [args.fold]
