"""summary: what an experiment scored and whether this run rebuilt anything; info: facts for Make.

`summary` reads scores.json and the artifact mtimes (Make passes the time it started in
PIPELINE_MAKE_START), prints CV, per-fold spread and holdout, and says plainly when nothing was
retrained. `info` prints one fact Make needs (e.g. n_folds) without importing torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from pipeline.core import paths
from pipeline.core.artifacts import read_json
from pipeline.core.bag import members
from pipeline.core.config import config_paths, load_config, parse_override
from pipeline.core.errors import UserError


def n_folds(config: Path, overrides: list[str]) -> int:
    """folds.n_folds from competition.yaml and overrides, read without validating (Make calls this often)."""
    value = 5
    comp_path, _, _ = config_paths(config)
    if comp_path.exists():
        folds = (yaml.safe_load(comp_path.read_text()) or {}).get("folds") or {}
        value = folds.get("n_folds", value)
    for text in overrides:
        parts, parsed = parse_override(text)
        if parts == ["folds", "n_folds"]:
            value = parsed
    return int(value)


def source_files(config: Path, overrides: list[str]) -> list[Path]:
    """The finished files of train.pseudo / soft_labels' sources, read without validating (Make's prerequisites)."""
    from pipeline.data.sources import finished_files

    _, comp, exp = config_paths(config)
    values = (yaml.safe_load(config.read_text()) or {}) if exp and config.is_file() else {}
    train = values.get("train") if isinstance(values.get("train"), dict) else {}
    named = {key: (train.get(key) or {}).get("from") if isinstance(train.get(key), dict) else None
             for key in ("pseudo", "soft_labels")}  # fmt: skip
    sample = values.get("sample") or 0
    for text in overrides:
        parts, parsed = parse_override(text)
        if parts[:1] == ["sample"]:
            sample = parsed or 0
        elif len(parts) == 3 and parts[0] == "train" and parts[1] in named and parts[2] == "from":
            named[parts[1]] = parsed
    return finished_files(comp, [str(name) for name in named.values() if name], int(sample))


def bag_seeds(config: Path, overrides: list[str]) -> list[int]:
    """train.seeds of a seed bag (two or more seeds) from the experiment yaml and overrides, read without validating
    (load_config refuses a bad list when a stage runs); [] without a bag."""
    seeds: object = []
    if config.exists() and config.stem != "competition":
        seeds = ((yaml.safe_load(config.read_text()) or {}).get("train") or {}).get("seeds", seeds)
    for text in overrides:
        parts, parsed = parse_override(text)
        if parts == ["train", "seeds"]:
            seeds = parsed
    return [int(seed) for seed in seeds] if isinstance(seeds, list) and len(seeds) >= 2 else []


def retrained_folds(out: paths.Paths, n_folds: int, seeds: list[int | None], started: float) -> list[int]:
    """The folds with a member trained since `started`. Judged by fold<k>/oof_plain.csv, which train writes only when
    it trains: a train that finds the weights current touches them (so Make sees them up to date), so their mtime
    says nothing about whether this run trained them."""

    def trained_since(file: Path) -> bool:
        return file.exists() and file.stat().st_mtime >= started

    return [k for k in range(n_folds) if any(trained_since(out.member(seed).oof_plain(k)) for seed in seeds)]


INFO = {"n_folds": lambda config, overrides: n_folds(config, overrides),
        "seeds": lambda config, overrides: " ".join(map(str, bag_seeds(config, overrides))),
        "sources": lambda config, overrides: " ".join(map(str, source_files(config, overrides)))}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    if args.command == "info":
        if not args.what or any(what not in INFO for what in args.what) or not args.config:
            raise UserError(f"info: usage `python -m pipeline info --config FILE {'|'.join(INFO)} [...]`")
        for what in args.what:  # one line each: Make asks for several facts with one Python start
            print(INFO[what](Path(args.config), args.overrides))
        return
    if not args.config:
        raise UserError("summary: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    # Finished files only: no folds check, no cross-field checks (their torch/sklearn imports would be most of a
    # no-op `make all`'s time); the stages that wrote scores.json checked the same config.
    cfg = load_config(args.config, args.overrides, cross_check=False)
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
