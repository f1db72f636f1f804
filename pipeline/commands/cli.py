"""`python -m pipeline <command>`: the parser built from the command records, and `run_command`, the one way a
command runs (the CLI's `main` and the notebook API's `run_stage` both call it), under pipeline.core.cli.run_task's
error contract: a user mistake -> one `error:` line and exit 2; anything else is a bug (exit 1, traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline.commands import COMMANDS, Command
from pipeline.core.cli import debugging, fold_id, run_task, split_overrides
from pipeline.core.errors import UserError
from pipeline.core.paths import REFIT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage dump -> our one-line contract
        command = " ".join(self.prog.split()[1:])  # "pipeline train" -> "train"; the top-level parser -> ""
        raise UserError(f"{message} (see `python -m pipeline {command + ' ' if command else ''}--help`)")


def _fold_type(command: Command):  # noqa: ANN202 - an argparse type
    refit_takers = " and ".join(c.name for c in COMMANDS.values() if c.accepts_refit)

    def parse(text: str) -> int:
        fold = fold_id(text)
        if fold == REFIT and not command.accepts_refit:
            raise argparse.ArgumentTypeError(f"only {refit_takers} take --fold refit (make refit CONFIG=...)")
        return fold

    parse.__name__ = "fold"  # argparse names the type in its message
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description="A Kaggle image-classification pipeline: one command per stage.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.add_argument("--config", help="configs/<comp>/<exp>.yaml")
        p.add_argument("--comp", help="competition slug (download, init)")
        which = "one fold only, or refit" if command.accepts_refit else "one fold only"
        p.add_argument("--fold", type=_fold_type(command), default=None, help=f"{which} (default: every fold)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, dotted key; repeatable, or several separated by spaces")  # fmt: skip
        p.add_argument("--force", action="store_true", help="redo the stage even when its output exists")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        p.add_argument("what", nargs="*", help=argparse.SUPPRESS)
        for flag, options in command.flags:
            p.add_argument(flag, **options)
    return parser


def subscribe_trackers() -> None:
    """Trackers (tracking: mlflow | tensorboard | wandb) hear the events stages emit (a fold trained)."""
    from pipeline.reporting import tracking

    tracking.subscribe()


def run_command(argv: list[str]) -> None:
    """Parse `argv` (command first); when the command reads folds, check its whole config (custom augmentations
    included) and that folds.csv is current, before any work; run the command's module, then let trackers sync what
    it wrote. Raises UserError for a user mistake."""
    args = build_parser().parse_args(argv)
    args.overrides = split_overrides(args.overrides)
    command = COMMANDS[args.command]
    if command.reads_folds and args.config:
        from pipeline.core.config import load_config
        from pipeline.data.folds_record import check_folds_current

        cfg = load_config(args.config, args.overrides)
        if cfg.augment.policy == "custom":  # each transform built once on a sample image: needs albumentations
            from pipeline.data.augment_policies import check_custom_steps

            check_custom_steps(cfg.augment)
        check_folds_current(cfg)
    subscribe_trackers()
    importlib.import_module(command.module).run(args)
    from pipeline.reporting.tracking import after_stage

    after_stage(args)  # ensemble/report/scores -> the experiment's tracker run (tracking: none does nothing)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline <command> ...` under run_task's contract; returns the exit status."""
    debug = debugging(argv)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr,
                        force=True)  # fmt: skip
    return run_task(lambda: run_command(sys.argv[1:] if argv is None else argv), debug)
