"""What every command's `run(args)` uses to turn its arguments into a config, folds, seeds or a competition, and the
one error contract every entry point runs under (`run_task`: the CLI, the notebook API and the Kaggle Kernel alike).
The command records, the parser and `main` are the command layer's (pipeline.commands).

User mistakes (pipeline.core.errors.UserError) print one `error:` line and exit 2; anything else is a bug and exits 1
with its traceback. `--debug` or PIPELINE_DEBUG=1 shows tracebacks for both.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from pipeline.core.config import Config, config_paths, load_config
from pipeline.core.errors import EXIT_STOPPED, Stopped, UserError
from pipeline.core.paths import REFIT


def config_from_args(args: argparse.Namespace) -> Config:
    if not args.config:
        raise UserError(f"{args.command}: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    cfg = load_config(args.config, args.overrides)
    sweep_temps(cfg)
    return cfg


def sweep_temps(cfg: Config) -> None:
    """Temp files of killed runs of this competition and experiment go when a stage starts (not those of live ones)."""
    from pipeline.core import artifacts, paths

    out = paths.for_config(cfg)
    artifacts.sweep_stale_temps([out.processed, out.run, out.submission.parent])


def fold_id(text: str) -> int:
    """--fold: a fold number, or `refit` (the full-data refit, paths.REFIT)."""
    if text == "refit":
        return REFIT
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or refit, got {text!r}") from None


def folds_from_args(args: argparse.Namespace, cfg: Config) -> list[int]:
    if args.fold is None:
        return list(range(cfg.folds.n_folds))
    if args.fold == REFIT:  # the parser lets only the commands that accept refit take it
        return [REFIT]
    if not 0 <= args.fold < cfg.folds.n_folds:
        raise UserError(f"--fold {args.fold}: folds.n_folds is {cfg.folds.n_folds}, so use 0..{cfg.folds.n_folds - 1}")
    return [args.fold]


def seeds_from_args(args: argparse.Namespace, cfg: Config) -> list[int | None]:
    """The bag members a per-member stage works on (pipeline.core.bag): --seed S, else every seed of train.seeds;
    [None] (the fold itself) without a bag."""
    from pipeline.core.bag import bag_seeds, members

    seed = getattr(args, "seed", None)
    if seed is not None and args.fold == REFIT:
        raise UserError(f"--seed {seed}: the refit is one model, trained with the bag's first seed; drop --seed")
    if seed is None:
        return members(cfg)
    seeds = bag_seeds(cfg)
    if seed not in seeds:
        listed = f"train.seeds is {seeds}" if seeds else "train.seeds lists no seed bag (two or more seeds)"
        raise UserError(f"--seed {seed}: {listed}; pass one of its seeds, or add {seed} to train.seeds")
    return [seed]


SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a Kaggle competition slug


def comp_from_args(args: argparse.Namespace) -> str:
    """The competition slug from --comp, else from --config's folder name (configs/<comp>/<exp>.yaml)."""
    comp = getattr(args, "comp", None) or (config_paths(Path(args.config))[1] if getattr(args, "config", None) else "")
    if not comp:
        raise UserError(f"{args.command}: --comp <slug> is required (Make: COMP=<slug>), or --config")
    if not SLUG.fullmatch(comp):
        raise UserError(f"--comp {comp!r}: not a competition slug; use the part after /competitions/ in its URL")
    return comp


def split_overrides(values: list[str]) -> list[str]:
    """Make passes SET="a=1 b=2" as one string; accept both forms."""
    return [item for value in values for item in value.split()]


def one_line(message: str) -> str:
    """The `error:` line for a UserError's message.

    One raised in a DataLoader worker arrives wrapped in the worker's traceback ("Caught UserError in DataLoader
    worker process 0. Original Traceback ... pipeline.core.errors.UserError: <message>"): keep the message. Any other
    message that spans lines is joined, so stderr still gets exactly one line.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message.strip()
    if lines[0].startswith("Caught ") and any(line.startswith("Original Traceback") for line in lines):
        return re.sub(r"^[A-Za-z_][\w.]*: ", "", lines[-1], count=1)
    return " ".join(lines)


def run_task(task: Callable[[], object], debug: bool = False) -> int:
    """The one error contract of every entry point (CLI and Kaggle Kernel): 0 when `task` finishes; a user mistake
    (UserError) -> one `error:` line on stderr and 2; a stop that saved a checkpoint -> `stopped:` and 75; Ctrl-C ->
    130. Anything else is a bug and propagates with its traceback. `debug` also prints UserError tracebacks."""
    try:
        task()
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Stopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


def debugging(argv: list[str] | None = None) -> bool:
    return os.environ.get("PIPELINE_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
