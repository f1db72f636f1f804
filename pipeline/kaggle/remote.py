"""remote-train (Make: `make train|all CONFIG=... RUNNER=kaggle`): train units in Kaggle notebooks, bring them home.

Make calls it once per unit it decides to build (a fold, `--fold K`, or a seed-bag member, `--seed S`), exactly where
it would call `train`. It runs the LR range test at home first when train.lr is auto and lr_find.json is missing
(every unit then trains with the LR a local run would use), uploads the experiment's training bundle
(pipeline.kaggle.remote_bundle; unchanged: not again), then, under one lock per experiment, works on every unit of
the experiment each poll:

- polls each running notebook (pipeline.kaggle.remote_poll): lands the units that finished, queues the ones whose
  session stopped at its time budget or was killed at Kaggle's limit, fails the ones that failed, each on its own;
- pushes waiting units as notebooks (pipeline.kaggle.remote_push): two per notebook on a T4 x2, this call's unit
  first, until `kaggle.sessions` notebooks run at once and while the weekly GPU quota covers one more;
- prints one line per unit whenever it changes (state, session, epoch, ETA from the notebook's log).

It returns when its own unit's weights have landed, so the next units Make asks for are often home already. A unit
whose notebook failed exits 2 with its last lines of the notebook's log (the log and output are in the notebook's
first unit's fold<k>/.remote/); a unit whose kernel vanished is said so. Ctrl-C leaves the notebooks running:
remote.json keeps each one's kernel and version, and the next `make` re-attaches.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import member_config
from pipeline.core.config import TRAINING_SECTIONS, Config, fingerprint
from pipeline.core.errors import UserError
from pipeline.kaggle.remote_poll import Poller
from pipeline.kaggle.remote_push import Pusher, running_notebooks
from pipeline.kaggle.remote_state import DONE, FAILED, Unit, clear_state, read_state, weights_path
from pipeline.kaggle.wait import poll_seconds

log = logging.getLogger(__name__)


def trained_here(cfg: Config, unit: Unit) -> bool:
    """The unit's weights are home under this config (touched, as train does); UserError when under another."""
    from pipeline.training.checkpoint import trained_fingerprint

    weights = weights_path(cfg, unit)
    if not weights.is_file():
        return False
    if trained_fingerprint(weights) != fingerprint(member_config(cfg, unit.seed), TRAINING_SECTIONS):
        raise UserError(f"{weights} was trained under a different config; delete {weights.parent} to retrain, "
                        "or save the changed config as a new experiment (configs/<comp>/<new>.yaml)")  # fmt: skip
    os.utime(weights)
    return True


@contextlib.contextmanager
def experiment_lock(cfg: Config) -> Iterator[None]:
    """One process at a time works on the experiment's remote units (make -j runs several remote-train calls)."""
    path = paths.for_config(cfg).kaggle_train / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def find_lr_first(cfg: Config) -> None:
    """train.lr auto: run the LR range test here when lr_find.json is missing or was made under another config, so
    the bundle ships it and every notebook trains with the LR a local run would use (each notebook would otherwise
    run a range test of its own, on its own fold and device)."""
    if not isinstance(cfg.train.lr, str):
        return
    from pipeline.core.bag import first_member
    from pipeline.training.lr_range import STEPS, lr_find_fingerprint, suggested_lr
    from pipeline.training.model import resolve_device

    with experiment_lock(cfg):  # make -j: one range test, the other calls read its lr_find.json
        found = paths.for_config(cfg).lr_find_json
        current = found.is_file() and artifacts.read_json(found).get("fingerprint") == lr_find_fingerprint(
            first_member(cfg))  # fmt: skip
        if not current:
            log.info("remote: train.lr auto and no lr_find.json for this config yet: running the LR range test here "
                     "first (%d steps on fold 0; `make lr-find` does it alone), then the units train on Kaggle with "
                     "its suggestion", STEPS)  # fmt: skip
        suggested_lr(cfg, resolve_device(cfg.device))


class Remote:
    """The experiment's remote units as one `remote-train` call sees them: a Pusher and a Poller sharing a client."""

    def __init__(self, cfg: Config, user: str, accelerator: str, kaggle: Any) -> None:  # noqa: ANN401
        self.cfg = cfg
        self.pusher = Pusher(cfg, user, accelerator, kaggle)
        self.poller = Poller(cfg, kaggle)
        self.lines: dict[str, str] = {}

    def step(self, first: Unit) -> None:
        """One poll of every running notebook, then push what waits; print the lines that changed."""
        for group in running_notebooks(self.cfg).values():
            for unit, line in self.poller.advance(group).items():
                self.say(unit, line)
        if read_state(self.cfg, first).get("state") != FAILED:  # this call is about to fail: push nothing more
            for unit in self.pusher.top_up(first):
                state = read_state(self.cfg, unit)
                others = [key for key in state.get("notebook", []) if key != unit.key]
                shared = f", with {', '.join(Unit.from_key(key).label for key in others)}" if others else ""
                self.say(
                    unit, f"pushed (session {state['session']}, {state['kernel']} v{state.get('version')}{shared})"
                )

    def say(self, unit: Unit, line: str) -> None:
        if self.lines.get(unit.key) != line:
            self.lines[unit.key] = line
            log.info("remote %s: %s", unit.label, line)

    def train(self, unit: Unit) -> Path:
        """Work on the experiment's units until `unit`'s weights are home; their path."""
        with experiment_lock(self.cfg):
            self.pusher.upload()
        try:
            while True:
                with experiment_lock(self.cfg):
                    self.step(unit)
                    state = read_state(self.cfg, unit)
                if state.get("state") == DONE and weights_path(self.cfg, unit).is_file():
                    return weights_path(self.cfg, unit)
                if state.get("state") == FAILED:
                    report(self.cfg, unit, state)
                if not state and self.pusher.quota_said and not running_notebooks(self.cfg):
                    raise UserError(f"{unit.label} was not pushed: {self.pusher.quota_said}; wait for the quota to "
                                    "refresh (`kaggle quota`), or train at home (drop RUNNER=kaggle)")  # fmt: skip
                time.sleep(poll_seconds())
        except KeyboardInterrupt:
            groups = running_notebooks(self.cfg).values()
            running = [f"{u.label} ({s['kernel']} v{s.get('version')})" for group in groups for u, s in group]
            if running:
                log.warning("remote: still running on Kaggle: %s; re-run the same make command to re-attach",
                            ", ".join(running))  # fmt: skip
            raise


def report(cfg: Config, unit: Unit, state: dict[str, Any]) -> None:
    """The failed unit's log tail and one `error:` line; its state goes, so the next make pushes it afresh."""
    for line in state.get("log") or []:
        log.error("  | %s", line)
    clear_state(cfg, unit)
    last = f" (last line: {state['log'][-1].strip()})" if state.get("log") else ""
    raise UserError(f"{unit.label} failed on Kaggle: {state.get('message')}{last}; its output and log are in "
                    f"{state.get('output')}")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from pipeline.core.cli import config_from_args, seeds_from_args
    from pipeline.kaggle.client import Kaggle
    from pipeline.kaggle.remote_bundle import choose_accelerator, kaggle_user

    cfg = config_from_args(args)
    if args.fold is None or args.fold == paths.REFIT:
        raise UserError("remote-train: --fold K (one fold; the refit trains at home: make refit without RUNNER)")
    if not 0 <= args.fold < cfg.folds.n_folds:
        raise UserError(f"--fold {args.fold}: folds.n_folds is {cfg.folds.n_folds}, so use 0..{cfg.folds.n_folds - 1}")
    seeds = seeds_from_args(args, cfg)
    units = [Unit(args.fold, seed) for seed in seeds]
    pending = [unit for unit in units if not trained_here(cfg, unit)]
    for unit in units:
        if unit not in pending:
            log.info("%s: already trained (%s), skipping", unit.label, weights_path(cfg, unit))
    if not pending:
        return
    accelerator = choose_accelerator(cfg, getattr(args, "accelerator", None), cfg.kaggle.accelerator)
    find_lr_first(cfg)
    remote = Remote(cfg, kaggle_user(getattr(args, "user", None)), accelerator, Kaggle())
    for unit in pending:
        remote.train(unit)
        log.info("%s: trained on Kaggle -> %s", unit.label, weights_path(cfg, unit))
    artifacts.sweep_stale_temps([paths.for_config(cfg).run])
