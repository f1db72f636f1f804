"""summary: what an experiment scored and whether this run rebuilt anything; info: facts for Make.

`summary` reads scores.json and the mtimes of train's oof_plain.csv files (Make passes the time it started in
PIPELINE_MAKE_START), prints CV, per-fold spread and holdout, and says plainly when nothing was
retrained. `info` prints one fact Make needs (e.g. n_folds) without importing torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.core import paths
from pipeline.core.artifacts import read_json
from pipeline.core.bag import bag_seeds, members
from pipeline.core.config import Config, load_config
from pipeline.core.errors import UserError


def source_files(cfg: Config) -> list[Path]:
    """The finished files of train.pseudo / soft_labels' sources (Make's prerequisites of the folds)."""
    from pipeline.data.sources import finished_files

    named = [section.from_ for section in (cfg.train.pseudo, cfg.train.soft_labels) if section.from_]
    return finished_files(cfg.comp, [str(name) for name in named], cfg.sample)


# Facts Make asks for (`python -m pipeline info --config FILE <fact>`), from the config as load_config reads it,
# without the cross-field checks (a stage that runs makes those and fails loudly; Make falls back quietly here).
INFO = {"n_folds": lambda cfg: str(cfg.folds.n_folds),
        "seeds": lambda cfg: " ".join(map(str, bag_seeds(cfg))),
        "sources": lambda cfg: " ".join(map(str, source_files(cfg)))}  # fmt: skip


def retrained_folds(out: paths.Paths, n_folds: int, seeds: list[int | None], started: float) -> list[int]:
    """The folds with a member trained since `started`. Judged by fold<k>/oof_plain.csv, which train writes only when
    it trains: a train that finds the weights current touches them (so Make sees them up to date), so their mtime
    says nothing about whether this run trained them."""

    def trained_since(file: Path) -> bool:
        return file.exists() and file.stat().st_mtime >= started

    return [k for k in range(n_folds) if any(trained_since(out.member(seed).oof_plain(k)) for seed in seeds)]


def run(args: argparse.Namespace) -> None:
    if args.command == "info":
        if not args.what or any(what not in INFO for what in args.what) or not args.config:
            raise UserError(f"info: usage `python -m pipeline info --config FILE {'|'.join(INFO)} [...]`")
        cfg = load_config(args.config, args.overrides, check=False)
        for what in args.what:  # one line each: Make asks for several facts with one Python start
            print(INFO[what](cfg))
        return
    if not args.config:
        raise UserError("summary: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    # Finished files only: no folds check, no cross-field checks (their torch/sklearn imports would be most of a
    # no-op `make all`'s time); the stages that wrote scores.json checked the same config.
    cfg = load_config(args.config, args.overrides, check=False)
    out = paths.for_config(cfg)
    scores = read_json(out.scores)
    folds = scores["folds"]
    spread = f"folds {min(folds):.4f}..{max(folds):.4f}, {len(folds)} folds, TTA {'+'.join(scores['tta_views'])}"
    print(f"{cfg.comp}/{out.run.name}: CV {scores['metric']} = {scores['cv']:.4f} ({spread})")
    if scores.get("holdout") is not None:
        print(f"{cfg.comp}/{out.run.name}: held-out test {scores['metric']} = {scores['holdout']:.4f}")
    print(f"submission: {out.submission}")
    started = float(os.environ.get("PIPELINE_MAKE_START", "0") or 0)
    if started:
        retrained = retrained_folds(out, cfg.folds.n_folds, members(cfg), started)
        if retrained:
            print(f"this run trained fold(s) {', '.join(map(str, retrained))}")
        else:
            print("nothing retrained: every fold's weights were already up to date")
