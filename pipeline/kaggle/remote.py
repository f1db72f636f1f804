"""remote-train (Make: `make train|all CONFIG=... RUNNER=kaggle`): train one unit in a Kaggle notebook, bring it home.

Make calls it once per unit it decides to build (a fold, `--fold K`, or a seed-bag member, `--seed S`), exactly where
it would call `train`. It uploads the experiment's training bundle (pipeline.kaggle.remote_bundle; unchanged: not
again), then, under one lock per experiment, works on every unit of the experiment each poll:

- pushes pending units (no weights, no remote.json) as notebooks until `kaggle.sessions` run at once, this call's
  unit first (a push Kaggle refuses for too many sessions waits and is retried; none is pushed when the weekly GPU
  quota left cannot cover a unit as long as the ones already measured took);
- polls each running unit; a session that stopped at its time budget (a little under `kaggle.session_limit`, or the
  user's smaller train.time_budget) is resumed in a new version of the same kernel with its own output attached
  (the checkpoint); a session killed at the limit resumes from the last checkpoint it has;
- downloads a finished unit's output into fold<k>/.remote/, checks it (pipeline.kaggle.remote_land) and lands it in
  fold<k>/ as a local run would, weights last;
- prints one line per unit whenever it changes (state, session, epoch, ETA from the notebook's log).

It returns when its own unit's weights have landed, so the next units Make asks for are often home already. The
status Kaggle reports carries no version and can still be the previous session's right after a push: a session
is known by the nonce its push carried (printed first in its log, written in its unit.json). A failed notebook
brings its log home (fold<k>/.remote/) and the unit's call exits 2 with its last lines; a unit whose kernel
vanished is said so. Ctrl-C leaves the notebooks running: remote.json keeps each one's kernel and version, and
the next `make` re-attaches.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import member_config
from pipeline.core.config import TRAINING_SECTIONS, Config, fingerprint
from pipeline.core.errors import UserError
from pipeline.kaggle import remote_bundle, remote_land
from pipeline.kaggle.remote_state import (
    DONE,
    FAILED,
    RUNNING,
    Unit,
    clear_state,
    format_eta,
    progress_of,
    read_state,
    units_of,
    weights_path,
    write_state,
)
from pipeline.kaggle.wait import KERNEL_DONE, KERNEL_FAILED, log_tail, poll_seconds

log = logging.getLogger(__name__)

SESSION_BUSY = re.compile(r"(too many|concurrent|maximum|limit)\W+(\w+\W+){0,6}sessions?|sessions?\W+(\w+\W+){0,4}"
                          r"(limit|maximum)", re.IGNORECASE)  # fmt: skip
TIMED_OUT = re.compile(r"time ?limit|timed? ?out|maximum run ?time|exceeded", re.IGNORECASE)
STALE_POLLS = 8  # terminal statuses without this push's nonce are the previous session's for this many polls
PROGRESS_EVERY = 4  # polls between log downloads of a running unit (its epoch and ETA)
MAX_SESSIONS = 100  # a unit that needs more sessions than this is not progressing
LOG_LINES = 20


def session_budget(cfg: Config) -> tuple[float, float]:
    """(session limit, training time budget per session) in seconds: the budget stays a margin under the limit for
    the install, the data and packing the output, or is the user's own train.time_budget when that is smaller."""
    from pipeline.training.checkpoint import parse_budget

    limit = parse_budget(cfg.kaggle.session_limit)
    budget = limit - min(1800.0, 0.25 * limit)
    own = parse_budget(cfg.train.time_budget)
    return limit, min(budget, own) if own else budget


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


class Remote:
    """The experiment's remote units as one `remote-train` call sees them; `kaggle` is the client."""

    def __init__(self, cfg: Config, user: str, accelerator: str, kaggle: Any) -> None:  # noqa: ANN401
        self.cfg, self.user, self.accelerator, self.kaggle = cfg, user, accelerator, kaggle
        self.limit, self.budget = session_budget(cfg)
        self.dataset = ""
        self.polls: dict[str, int] = {}  # unit key -> polls since its push (or since this call re-attached)
        self.lines: dict[str, str] = {}
        self.busy_said = False
        self.quota_said = ""  # why top_up pushed nothing (the weekly GPU quota), when that is why

    # the dataset
    def upload(self) -> None:
        bundle = remote_bundle.build_train_bundle(self.cfg, self.user)
        remote_bundle.upload(self.kaggle, self.cfg, bundle)
        self.dataset = bundle.ref

    # pushing
    def push(self, unit: Unit, session: int, resume: bool) -> bool:
        """Push the unit's next session; False when Kaggle refused it for too many sessions (retried later)."""
        ref, title = remote_bundle.kernel_names(self.cfg, unit.key, self.user)
        nonce = secrets.token_hex(8)
        settings = {"bundle": self.dataset.split("/", 1)[1], "comp": self.cfg.comp, "exp": self.cfg.exp,
                    "unit": unit.key, "fold": unit.fold, "seed": "" if unit.seed is None else unit.seed, "nonce": nonce,
                    "session": session, "time_budget": round(self.budget, 3),
                    "internet": "1" if self.cfg.kaggle.internet else ""}  # str/int only (kernel.py)  # fmt: skip
        folder = paths.for_config(self.cfg).member(unit.seed).remote_work(unit.fold) / "kernel"
        remote_bundle.write_kernel(folder, self.cfg, ref, title, settings, self.dataset, self.accelerator, resume)
        try:
            answer = self.kaggle.push_kernel(ref, folder, timeout=int(self.limit))
        except UserError as exc:
            if SESSION_BUSY.search(str(exc)):
                if not self.busy_said:
                    log.info("remote: Kaggle runs as many sessions as it allows; %s waits for a free one", unit.label)
                self.busy_said = True
                return False
            raise
        self.busy_said = False
        state = read_state(self.cfg, unit)
        write_state(self.cfg, unit, {
            "state": RUNNING, "kernel": ref, "version": getattr(answer, "version_number", None), "nonce": nonce,
            "session": session, "pushed": time.time(), "versions": [*state.get("versions", []),
            getattr(answer, "version_number", None)], "strikes": state.get("strikes", 0) if resume else 0,
        })  # fmt: skip
        self.polls[unit.key] = 0
        return True

    def quota_allows(self, running: int) -> bool:
        """The weekly GPU quota left covers one more unit besides the `running` ones (as long as a landed one took)."""
        if remote_bundle.inference_bundle.ACCELERATORS[self.accelerator] is None:
            return True  # a CPU notebook uses no GPU quota
        quota = self.kaggle.gpu_quota()
        if quota is None:
            return True
        used, total = quota
        need = self.measured_hours()
        left = total - used - running * need
        if left > max(need, 0.0) and left > 0:
            return True
        self.quota_said = (f"the weekly GPU quota left ({max(total - used, 0):.1f} h of {total:.1f} h) cannot cover "
                           f"another unit (~{need:.1f} h each, {running} running)")  # fmt: skip
        return False

    def measured_hours(self) -> float:
        """Hours one unit took: the longest training time a landed unit's log.csv recorded (0 when none has)."""
        from pipeline.data.tables import read_csv

        longest = 0.0
        for unit in units_of(self.cfg):
            log_csv = paths.for_config(self.cfg).member(unit.seed).train_log(unit.fold)
            if weights_path(self.cfg, unit).is_file() and log_csv.is_file():
                table = read_csv(log_csv, "training log")
                if "seconds" in table.columns:
                    longest = max(longest, float(table["seconds"].astype(float).sum()) / 3600)
        return longest * 1.2

    def top_up(self, first: Unit) -> None:
        """Push pending units (`first` first) while sessions and quota allow."""
        units = sorted(units_of(self.cfg), key=lambda u: u != first)
        running = sum(1 for u in units if read_state(self.cfg, u).get("state") == RUNNING)
        for unit in units:
            if running >= self.cfg.kaggle.sessions:
                return
            if read_state(self.cfg, unit) or weights_path(self.cfg, unit).is_file():
                continue
            if not self.quota_allows(running):
                return
            if not self.push(unit, 1, resume=False):
                return
            running += 1

    # polling
    def staging(self, unit: Unit, name: str) -> Path:
        folder = paths.for_config(self.cfg).member(unit.seed).remote_work(unit.fold) / name
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    def fetch(self, unit: Unit, state: dict[str, Any], name: str) -> tuple[Path, list[Path]]:
        folder = self.staging(unit, name)
        try:
            files = self.kaggle.kernel_output(state["kernel"], folder)
        except UserError as exc:
            log.debug("remote: no output of %s yet: %s", state["kernel"], exc)
            files = []
        return folder, files

    def advance(self, unit: Unit, state: dict[str, Any]) -> str:
        """One poll of a running unit: act on what its kernel says; the unit's progress line."""
        import requests

        polls = self.polls.get(unit.key, 0) + 1
        self.polls[unit.key] = polls
        try:
            status, failure = self.kaggle.kernel_status(state["kernel"])
        except UserError as exc:
            cause = exc.__cause__
            if isinstance(cause, requests.HTTPError) and getattr(cause.response, "status_code", None) == 404:
                return self.fail(unit, state, f"kernel {state['kernel']} vanished from Kaggle (deleted, or its "
                                 "account lost it); re-run make to push the unit again", [])  # fmt: skip
            raise
        where = f"session {state['session']}, {state['kernel']} v{state.get('version') or '?'}"
        if status not in KERNEL_DONE and status not in KERNEL_FAILED:
            state["seen_running"] = True
            return f"{status} ({where}{self.live_progress(unit, state, polls)})"
        if status.startswith("cancel"):
            return self.fail(unit, state, f"kernel {state['kernel']} was cancelled on Kaggle ({status}); re-run make "
                             "to push the unit again", [])  # fmt: skip
        folder, files = self.fetch(unit, state, f"v{state.get('version')}")
        record = remote_land.read_record(folder)
        tail = log_tail(files, LOG_LINES)
        ours = record is not None and record.get("nonce") == state["nonce"]
        if not ours and polls <= STALE_POLLS and not state.get("seen_running"):
            return f"starting ({where})"  # the status is still the previous session's
        if ours and record["state"] == "done":
            remote_land.land(self.cfg, unit, folder, record)
            write_state(self.cfg, unit, {**state, "state": DONE, "landed": time.time()})
            return f"done ({where}, {record.get('epochs_done')} epochs) -> {weights_path(self.cfg, unit)}"
        if ours and record["state"] == "stopped":
            return self.resume(unit, state, f"stopped at its time budget after {record.get('epochs_done')} epochs")
        if not ours and status in KERNEL_FAILED and TIMED_OUT.search(failure):
            if state.get("strikes", 0) >= 1:
                return self.fail(unit, state, f"two sessions in a row hit Kaggle's time limit ({failure}); lower "
                                 "kaggle.session_limit so each session stops in time", tail)  # fmt: skip
            state["strikes"] = state.get("strikes", 0) + 1
            return self.resume(unit, state, f"killed at Kaggle's time limit ({failure}); resuming from its last "
                               "checkpoint")  # fmt: skip
        reason = f"ended {status}{': ' + failure if failure else ''}"
        return self.fail(unit, state, f"the notebook {state['kernel']} v{state.get('version')} {reason}", tail)

    def resume(self, unit: Unit, state: dict[str, Any], why: str) -> str:
        if state["session"] >= MAX_SESSIONS:
            return self.fail(unit, state, f"{MAX_SESSIONS} sessions without finishing; raise kaggle.session_limit", [])
        write_state(self.cfg, unit, state)
        log.info("%s: session %d %s; pushing session %d", unit.label, state["session"], why, state["session"] + 1)
        if not self.push(unit, state["session"] + 1, resume=True):
            write_state(self.cfg, unit, {**state, "state": RUNNING, "waiting": True})
            return "waiting for a free session to resume"
        return f"resumed (session {state['session'] + 1})"

    def fail(self, unit: Unit, state: dict[str, Any], message: str, tail: list[str]) -> str:
        folder = paths.for_config(self.cfg).member(unit.seed).remote_work(unit.fold)
        write_state(self.cfg, unit, {**state, "state": FAILED, "message": message, "log": tail,
                                     "output": str(folder)})  # fmt: skip
        return f"failed: {message}"

    def full_log(self, files: list[Path]) -> list[str]:
        return log_tail(files, 1_000_000)

    def live_progress(self, unit: Unit, state: dict[str, Any], polls: int) -> str:
        """', epoch 2/5, ETA 3m10s' from the running notebook's log, when Kaggle shows it (every few polls)."""
        if polls % PROGRESS_EVERY != 1:
            return state.get("progress", "")
        _, files = self.fetch(unit, state, "live")
        found = progress_of(self.full_log(files))
        if found is None:
            return state.get("progress", "")
        done, total = found
        elapsed = time.time() - float(state.get("pushed", time.time()))
        eta = f", ETA {format_eta(elapsed / done * (total - done))}" if done else ""
        state["progress"] = f", epoch {done}/{total}{eta}"
        return state["progress"]

    def step(self, first: Unit) -> None:
        """One poll of every running unit, then top up; print the lines that changed."""
        for unit in units_of(self.cfg):
            state = read_state(self.cfg, unit)
            if state.get("state") != RUNNING:
                continue
            if state.get("waiting"):
                line = self.resume(unit, {**state, "waiting": False}, "waited for a free session")
            else:
                line = self.advance(unit, state)
                if read_state(self.cfg, unit).get("state") == RUNNING and read_state(self.cfg, unit).get(
                    "nonce") == state["nonce"]:  # fmt: skip
                    write_state(self.cfg, unit, state)  # seen_running, progress
            self.say(unit, line)
        if read_state(self.cfg, first).get("state") != FAILED:  # this call is about to fail: push nothing more
            self.top_up(first)
        for unit in units_of(self.cfg):
            state = read_state(self.cfg, unit)
            if state.get("state") == RUNNING and unit.key not in self.lines:
                self.say(unit, f"pushed (session {state['session']}, {state['kernel']} v{state.get('version')})")

    def running(self) -> list[Unit]:
        return [u for u in units_of(self.cfg) if read_state(self.cfg, u).get("state") == RUNNING]

    def say(self, unit: Unit, line: str) -> None:
        if self.lines.get(unit.key) != line:
            self.lines[unit.key] = line
            log.info("remote %s: %s", unit.label, line)

    # the unit Make asked for
    def train(self, unit: Unit) -> Path:
        """Work on the experiment's units until `unit`'s weights are home; their path."""
        with experiment_lock(self.cfg):
            self.upload()
        try:
            while True:
                with experiment_lock(self.cfg):
                    self.step(unit)
                    state = read_state(self.cfg, unit)
                if state.get("state") == DONE and weights_path(self.cfg, unit).is_file():
                    return weights_path(self.cfg, unit)
                if state.get("state") == FAILED:
                    self.report(unit, state)
                if not state and self.quota_said and not self.running():
                    raise UserError(f"{unit.label} was not pushed: {self.quota_said}; wait for the quota to refresh "
                                    "(`kaggle quota`), or train at home (drop RUNNER=kaggle)")  # fmt: skip
                time.sleep(poll_seconds())
        except KeyboardInterrupt:
            running = [f"{u.label} ({s['kernel']} v{s.get('version')})" for u in units_of(self.cfg)
                       if (s := read_state(self.cfg, u)).get("state") == RUNNING]  # fmt: skip
            if running:
                log.warning("remote: still running on Kaggle: %s; re-run the same make command to re-attach",
                            ", ".join(running))  # fmt: skip
            raise

    def report(self, unit: Unit, state: dict[str, Any]) -> None:
        """The failed unit's log tail and one `error:` line; its state goes, so the next make pushes it afresh."""
        for line in state.get("log") or []:
            log.error("  | %s", line)
        clear_state(self.cfg, unit)
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
    remote = Remote(cfg, kaggle_user(getattr(args, "user", None)), accelerator, Kaggle())
    for unit in pending:
        remote.train(unit)
        log.info("%s: trained on Kaggle -> %s", unit.label, weights_path(cfg, unit))
    artifacts.sweep_stale_temps([paths.for_config(cfg).run])
