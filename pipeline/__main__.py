"""Command line: `python -m pipeline <stage> --config configs/<comp>/<exp>.yaml [--fold K] [--set k=v ...]`.

User mistakes (pipeline.errors.UserError) print one `error:` line and exit 2; anything else is a bug
and exits 1 with its traceback. `--debug` or PIPELINE_DEBUG=1 shows tracebacks for both.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback

from pipeline.errors import UserError

# stage name -> (module, one-line help). Each module exposes `run(args: argparse.Namespace) -> None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("pipeline.download", "fetch the competition's files into data/raw/<comp>/"),
    "init": ("pipeline.init", "infer configs/<comp>/competition.yaml and baseline.yaml from the raw files"),
    "folds": ("pipeline.folds", "write data/processed/<comp>/folds.csv (stratified k-fold)"),
    "train": ("pipeline.train", "fine-tune one fold (--fold K) or every fold"),
    "predict": ("pipeline.predict", "out-of-fold and test probabilities with TTA, per fold"),
    "ensemble": ("pipeline.ensemble", "blend folds, score the CV, write scores.json"),
    "submission": ("pipeline.submission", "write submissions/<comp>/<exp>.csv in sample_submission's format"),
    "submit": ("pipeline.submit", "validate submissions/<comp>/<exp>.csv and upload it to the Kaggle leaderboard"),
    "scores": ("pipeline.scores", "leaderboard scores joined to local CV: data/runs/<comp>/leaderboard.csv"),
    "cache": ("pipeline.cache", "decode every image once into a uint8 memory-mapped cache"),
    "bench": ("pipeline.bench", "measure the data path: loader, training efficiency, TTA overhead, growth"),
    "blend": ("pipeline.blend", "blend COMP's experiments per configs/<comp>/blend.yaml (mean/geometric/rank/fitted)"),
    "summary": ("pipeline.summary", "print the experiment's scores and what this run did"),
    "lr-find": ("pipeline.lr_find", "LR range test on fold 0: lr_find.png + a suggested LR (train.lr: auto uses it)"),
    "weights": ("pipeline.weights", "prepare the offline ImageNet Lite0 weights file"),
    "info": ("pipeline.summary", "print facts Make needs (fold count, paths) without importing torch"),
    "report": ("pipeline.report", "data/runs/<comp>/<exp>/report.html: curves, CV, confusion, top losses, TTA, plan"),
    "experiments": ("pipeline.experiments", "a competition's experiments: CV, spread, leaderboard, config diffs"),
    "doctor": ("pipeline.doctor", "versions, GPUs, Kaggle credentials, Kaggle Kernel or not, free disk"),
    "plan": ("pipeline.planner", "will folds x TTA views x test images fit the Kaggle Kernel time limit?"),
    "kaggle-bundle": ("pipeline.bundle", "data/runs/<comp>/<exp>/kaggle-bundle/: weights, config, wheels, kernel"),
    "kaggle-push": ("pipeline.kaggle_push", "upload the bundle as a private Kaggle dataset, then push its kernel"),
    "sweep": ("pipeline.sweep", "Optuna sweep over config keys (--sweep configs/<comp>/sweep.yaml), one fold a trial"),
    "sweep-best": ("pipeline.sweep", "write the sweep's best trial as configs/<comp>/<name>-best.yaml"),
    "mlflow-ui": ("pipeline.tracking", "MLflow's UI on 127.0.0.1 over data/mlruns (needs the full mlflow package)"),
}

# Flags only some commands take: command -> [(flag, argparse keyword arguments)].
_PLAN_FLAGS: list[tuple[str, dict]] = [
    ("--time-limit", {"default": None, "help": "the kernel's time limit, e.g. 9h (default), 12h, 1h30m"}),
    ("--test-images", {"type": int, "default": None, "help": "test images the kernel predicts (default: test.csv's)"}),
    ("--slowdown", {"type": float, "default": None, "help": "kernel GPU X times slower than the logs' (default 1)"}),
]
_SWEEP_FLAG = ("--sweep", {"default": None, "help": "the sweep file (default: configs/<comp>/sweep.yaml)"})
COMMAND_FLAGS: dict[str, list[tuple[str, dict]]] = {
    "kaggle-bundle": [("--user", {"default": None, "help": "Kaggle username that owns the bundle (default: login)"})],
    "kaggle-push": [
        ("--wait", {"type": float, "default": 900.0, "help": "seconds to wait for Kaggle to process the dataset"}),
        ("--message", {"default": None, "help": "the dataset version's notes (default: experiment, CV, commit)"}),
    ],
    "plan": _PLAN_FLAGS,
    "sweep": [_SWEEP_FLAG],
    "sweep-best": [_SWEEP_FLAG],
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
        p.add_argument("--fold", type=int, default=None, help="one fold only (default: every fold)")
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
    worker process 0. Original Traceback ... pipeline.errors.UserError: <message>"): keep the message. Any other
    message that spans lines is joined, so stderr still gets exactly one line.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message.strip()
    if lines[0].startswith("Caught ") and any(line.startswith("Original Traceback") for line in lines):
        return re.sub(r"^[A-Za-z_][\w.]*: ", "", lines[-1], count=1)
    return " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("PIPELINE_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        args = build_parser().parse_args(argv)
        args.overrides = split_overrides(args.overrides)
        module = importlib.import_module(COMMANDS[args.command][0])
        module.run(args)
        from pipeline.tracking import after_stage

        after_stage(args)  # ensemble/report/scores -> the experiment's tracker run (tracking: none does nothing)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        from pipeline.checkpoint import EXIT_STOPPED, Stopped

        if not isinstance(exc, Stopped):
            raise
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
