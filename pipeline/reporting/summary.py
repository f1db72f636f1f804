"""summary: what an experiment scored and whether this run rebuilt anything; info: facts for Make.

`summary` reads scores.json and the artifact mtimes (Make passes the time it started in
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
from pipeline.core.cli import config_from_args
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


def run(args: argparse.Namespace) -> None:
    if args.command == "info":
        if len(args.what) != 1 or args.what[0] not in INFO or not args.config:
            raise UserError(f"info: usage `python -m pipeline info --config FILE {'|'.join(INFO)}`")
        print(INFO[args.what[0]](load_config(args.config, args.overrides, check=False)))
        return
    cfg = config_from_args(args)
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
        weights = {k: [out.member(seed).weights(k) for seed in members(cfg)] for k in range(cfg.folds.n_folds)}
        retrained = [
            k for k, files in weights.items() if any(w.exists() and w.stat().st_mtime >= started for w in files)
        ]
        if retrained:
            print(f"this run trained fold(s) {', '.join(map(str, retrained))}")
        else:
            print("nothing retrained: every fold's weights were already up to date")
