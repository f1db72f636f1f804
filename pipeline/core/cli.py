"""The command line: the command table and parser, the one error contract every entry point runs under
(`run_task`: CLI and Kaggle Kernel alike), and the helpers every stage's `run(args)` uses to turn arguments into
a config. `python -m pipeline` (pipeline.__main__) calls `main`.

User mistakes (pipeline.core.errors.UserError) print one `error:` line and exit 2; anything else is a bug and exits 1
with its traceback. `--debug` or PIPELINE_DEBUG=1 shows tracebacks for both.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from pipeline.core.config import Config, config_paths, load_config
from pipeline.core.errors import EXIT_STOPPED, Stopped, UserError
from pipeline.core.paths import REFIT

# Stages that build or never read folds.csv; every other stage checks it still matches competition.yaml, once, early.
NOT_READING_FOLDS = (
    "download",
    "init",
    "folds",
    "weights",
    "info",
    "doctor",
    "submit",
    "scores",
    "kaggle-push",
    "kaggle-submit",
)


def config_from_args(args: argparse.Namespace) -> Config:
    if not args.config:
        raise UserError(f"{args.command}: --config configs/<comp>/<exp>.yaml is required (Make: CONFIG=...)")
    cfg = load_config(args.config, args.overrides)
    sweep_temps(cfg)
    if getattr(args, "command", None) not in NOT_READING_FOLDS:
        from pipeline.data.folds_record import check_folds_current

        check_folds_current(cfg)
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


REFIT_STAGES = ("train", "predict")  # the stages that accept --fold refit


def folds_from_args(args: argparse.Namespace, cfg: Config) -> list[int]:
    if args.fold is None:
        return list(range(cfg.folds.n_folds))
    if args.fold == REFIT:
        if getattr(args, "command", None) not in REFIT_STAGES:
            raise UserError(f"--fold refit: only {' and '.join(REFIT_STAGES)} take it (make refit CONFIG=...)")
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


# stage name -> (module, one-line help). Each module exposes `run(args: argparse.Namespace) -> None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("pipeline.kaggle.download", "fetch the competition's files into data/raw/<comp>/"),
    "init": ("pipeline.data.init", "infer configs/<comp>/competition.yaml and baseline.yaml from the raw files"),
    "folds": ("pipeline.data.folds", "write data/processed/<comp>/folds.csv (stratified k-fold)"),
    "train": ("pipeline.training.train", "fine-tune one fold (--fold K) or every fold"),
    "predict": ("pipeline.inference.predict", "out-of-fold and test probabilities with TTA, per fold"),
    "ensemble": ("pipeline.inference.ensemble", "blend folds, score the CV, write scores.json"),
    "submission": ("pipeline.inference.submission", "write submissions/<comp>/<exp>.csv in sample_submission's format"),
    "submit": (
        "pipeline.kaggle.submit",
        "validate submissions/<comp>/<exp>.csv and upload it to the Kaggle leaderboard",
    ),
    "scores": (
        "pipeline.kaggle.leaderboard",
        "leaderboard scores joined to local CV: data/runs/<comp>/leaderboard.csv",
    ),
    "cache": ("pipeline.data.cache", "decode every image once into a uint8 cache, on every core"),
    "bench": (
        "pipeline.benchmarks.data_path",
        "measure the data path: loader, training efficiency, TTA overhead, growth",
    ),
    "blend": (
        "pipeline.inference.blend",
        "blend COMP's experiments per configs/<comp>/blend.yaml (mean/geometric/rank/fitted)",
    ),
    "summary": ("pipeline.reporting.summary", "print the experiment's scores and what this run did"),
    "lr-find": (
        "pipeline.training.lr_find",
        "LR range test on fold 0: lr_find.png + a suggested LR (train.lr: auto uses it)",
    ),
    "weights": ("pipeline.training.weights", "prepare the offline ImageNet Lite0 weights file"),
    "info": ("pipeline.reporting.summary", "print facts Make needs (fold count, paths) without importing torch"),
    "report": (
        "pipeline.reporting.report",
        "data/runs/<comp>/<exp>/report.html: curves, CV, confusion, top losses, TTA, plan",
    ),
    "experiments": (
        "pipeline.reporting.experiments",
        "a competition's experiments: CV, spread, leaderboard, config diffs",
    ),
    "doctor": ("pipeline.reporting.doctor", "versions, GPUs, Kaggle credentials, Kaggle Kernel or not, free disk"),
    "plan": ("pipeline.reporting.planner", "will folds x TTA views x test images fit the Kaggle Kernel time limit?"),
    "kaggle-bundle": (
        "pipeline.kaggle.bundle",
        "data/runs/<comp>/<exp>/kaggle-bundle/: weights, config, wheels, kernel",
    ),
    "kaggle-push": ("pipeline.kaggle.push", "upload the bundle as a private Kaggle dataset, then push its kernel"),
    "kaggle-submit": (
        "pipeline.kaggle.submit_kernel",
        "wait for the pushed kernel's run, submit its output, get the score",
    ),
    "sweep": (
        "pipeline.tuning.sweep",
        "Optuna sweep over config keys (--sweep configs/<comp>/sweep.yaml), one fold a trial",
    ),
    "sweep-best": ("pipeline.tuning.sweep", "write the sweep's best trial as configs/<comp>/<name>-best.yaml"),
    "pseudo": (
        "pipeline.training.pseudo",
        "write configs/<comp>/<exp>-pseudo.yaml: this recipe trained with FROM's pseudo-labelled test rows",
    ),
    "mlflow-ui": (
        "pipeline.reporting.tracking",
        "MLflow's UI on 127.0.0.1 over data/mlruns (needs the full mlflow package)",
    ),
}

# Flags only some commands take: command -> [(flag, argparse keyword arguments)].
_PLAN_FLAGS: list[tuple[str, dict]] = [
    ("--time-limit", {"default": None, "help": "the kernel's time limit, e.g. 9h (default), 12h, 1h30m"}),
    ("--test-images", {"type": int, "default": None, "help": "test images the kernel predicts (default: test.csv's)"}),
    ("--slowdown", {"type": float, "default": None, "help": "kernel GPU X times slower than the logs' (default 1)"}),
]
_SCORE_WAIT_FLAG = (
    "--wait",
    {"type": float, "default": None, "help": "seconds to wait for the score (default 1800; 0: no)"},
)
_BLEND_FLAG = ("--blend", {"default": None, "help": "a whole blend (configs/<comp>/blend.yaml's name) instead of "
                                                    "one experiment; with --comp (Make: BLEND=<name>)"})  # fmt: skip
_SWEEP_FLAG = ("--sweep", {"default": None, "help": "the sweep file (default: configs/<comp>/sweep.yaml)"})
COMMAND_FLAGS: dict[str, list[tuple[str, dict]]] = {
    "train": [("--seed", {"type": int, "default": None, "help": "one member of a seed bag (train.seeds) only"})],
    "kaggle-bundle": [
        _BLEND_FLAG,
        ("--user", {"default": None, "help": "Kaggle username that owns the bundle (default: login)"}),
        (
            "--accelerator",
            {
                "default": None,
                "help": "the kernel's GPU: t4x2 (default), l4, p100 or none (default: $KAGGLE_ACCELERATOR)",
            },
        ),
    ],  # fmt: skip
    "kaggle-push": [
        _BLEND_FLAG,
        ("--wait", {"type": float, "default": 900.0, "help": "seconds to wait for Kaggle to process the dataset"}),
        ("--message", {"default": None, "help": "the dataset version's notes (default: experiment, CV, commit)"}),
    ],
    "submit": [
        _SCORE_WAIT_FLAG,
    ],
    "kaggle-submit": [
        _BLEND_FLAG,
        _SCORE_WAIT_FLAG,
        ("--kernel-wait", {"type": float, "default": 10800.0, "help": "seconds to wait for the kernel's run"}),
        ("--message", {"default": None, "help": "the submission's description (default: experiment, CV, commit)"}),
    ],
    "plan": [*_PLAN_FLAGS, _BLEND_FLAG],
    "sweep": [_SWEEP_FLAG],
    "sweep-best": [_SWEEP_FLAG],
    "pseudo": [
        ("--from", {"dest": "source", "default": None, "help": "the experiment or blend whose test predictions label"}),
        ("--name", {"default": None, "help": "the new experiment's name (default: <exp>-pseudo, then -pseudo2, ...)"}),
    ],
    "ensemble": [
        ("--folds", {"default": None, "help": "blend only these folds, e.g. 0 or 0,2 (CV over their rows only)"})
    ],
    "mlflow-ui": [("--port", {"type": int, "default": 5000, "help": "port on 127.0.0.1 (default 5000)"})],
    "report": [
        *_PLAN_FLAGS,
        (
            "--tta",
            {
                "nargs": "?",
                "const": "configured",
                "choices": ["configured", "all"],
                "default": None,
                "help": "measure each TTA view on the OOF rows (configured views, or all known views)",
            },
        ),
    ],
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage dump -> our one-line contract
        command = " ".join(self.prog.split()[1:])  # "pipeline train" -> "train"; the top-level parser -> ""
        raise UserError(f"{message} (see `python -m pipeline {command + ' ' if command else ''}--help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="configs/<comp>/<exp>.yaml")
        p.add_argument("--comp", help="competition slug (download, init)")
        p.add_argument("--fold", type=fold_id, default=None, help="one fold only, or refit (default: every fold)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override, dotted key; repeatable, or several separated by spaces",
        )
        p.add_argument("--force", action="store_true", help="redo the stage even when its output exists")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        p.add_argument("what", nargs="*", help=argparse.SUPPRESS)
        for flag, options in COMMAND_FLAGS.get(name, []):
            p.add_argument(flag, **options)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline <command> ...`: parse, run the command's module, under run_task's contract."""
    debug = debugging(argv)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr,
                        force=True)  # fmt: skip

    def task() -> None:
        args = build_parser().parse_args(argv)
        args.overrides = split_overrides(args.overrides)
        importlib.import_module(COMMANDS[args.command][0]).run(args)
        from pipeline.reporting.tracking import after_stage

        after_stage(args)  # ensemble/report/scores -> the experiment's tracker run (tracking: none does nothing)

    return run_task(task, debug)
