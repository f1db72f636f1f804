"""RUNNER=kaggle at home: one poll of a running notebook, and what follows for each of its units.

Reads the notebook's status and, once it ended, its output (downloaded into fold<k>/.remote/v<version>/ of its first
unit; the running log into .../live/ every few polls, for each unit's epoch and ETA); writes each unit's
remote.json and, for a unit that finished, its files where a local run writes them (pipeline.kaggle.remote_land),
then announces "fold_trained" (pipeline.core.events) as `train` does, so the trackers see remote folds as local
ones. Each unit of a notebook is settled on its own, from its own <unit>.unit.json:

    done      checked, landed: state done
    stopped   at its time budget: queued for its next session (pipeline.kaggle.remote_push resumes it from this
              notebook's output, alone or re-paired)
    failed    state failed, with its own last lines of the notebook's log (`[<unit>] ` lines)
    no record the notebook was killed at Kaggle's time limit: queued to resume from its last checkpoint (a second
              kill in a row fails it); otherwise failed with the notebook's status

The status Kaggle reports carries no version and can still be the previous session's right after a push: a session
is known by the nonce its push carried (written in every unit.json). A kernel that vanished (404) or was cancelled
fails its units, said as such.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.core import events, paths
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.kaggle import remote_land
from pipeline.kaggle.remote_state import (
    DONE,
    FAILED,
    QUEUED,
    Unit,
    format_eta,
    lines_of,
    progress_of,
    read_state,
    weights_path,
    write_state,
)
from pipeline.kaggle.wait import KERNEL_DONE, KERNEL_FAILED, log_tail

log = logging.getLogger(__name__)

TIMED_OUT = re.compile(r"time ?limit|timed? ?out|maximum run ?time|exceeded", re.IGNORECASE)
STALE_POLLS = 8  # terminal statuses without this push's nonce are the previous session's for this many polls
PROGRESS_EVERY = 4  # polls between log downloads of a running notebook (its units' epoch and ETA)
MAX_SESSIONS = 100  # a unit that needs more sessions than this is not progressing
LOG_LINES = 20

Group = list[tuple[Unit, dict[str, Any]]]  # a notebook's units and their states (same kernel, version, nonce)


class Poller:
    """Polls the experiment's running notebooks; `kaggle` is the client (pipeline.kaggle.client.Kaggle)."""

    def __init__(self, cfg: Config, kaggle: Any) -> None:  # noqa: ANN401
        self.cfg, self.kaggle = cfg, kaggle
        self.polls: dict[str, int] = {}  # nonce -> polls of that session by this call

    def fetch(self, unit: Unit, kernel: str, name: str) -> tuple[Path, list[str]]:
        """The kernel's latest output in the unit's staging folder `name`; (folder, the lines of its log)."""
        folder = paths.for_config(self.cfg).member(unit.seed).remote_work(unit.fold) / name
        shutil.rmtree(folder, ignore_errors=True)
        try:
            files = self.kaggle.kernel_output(kernel, folder)
        except UserError as exc:
            log.debug("remote: no output of %s yet: %s", kernel, exc)
            files = []
        return folder, log_tail(files, 1_000_000)

    def advance(self, group: Group) -> dict[Unit, str]:
        """One poll of a running notebook: act on what its kernel says; each unit's progress line."""
        import requests

        first, state = group[0]
        kernel, nonce = state["kernel"], state["nonce"]
        polls = self.polls[nonce] = self.polls.get(nonce, 0) + 1
        try:
            status, failure = self.kaggle.kernel_status(kernel)
        except UserError as exc:
            cause = exc.__cause__
            if isinstance(cause, requests.HTTPError) and getattr(cause.response, "status_code", None) == 404:
                why = f"kernel {kernel} vanished from Kaggle (deleted, or its account lost it); re-run make to push "
                return {unit: self.fail(unit, s, why + "the unit again", []) for unit, s in group}
            raise
        where = f"{kernel} v{state.get('version') or '?'}"
        if status not in KERNEL_DONE and status not in KERNEL_FAILED:
            return self.running(group, status, where, polls)
        if status.startswith("cancel"):
            why = f"kernel {kernel} was cancelled on Kaggle ({status}); re-run make to push the unit again"
            return {unit: self.fail(unit, s, why, []) for unit, s in group}
        folder, lines = self.fetch(first, kernel, f"v{state.get('version')}")
        records = {unit: remote_land.read_record(folder, unit) for unit, _ in group}
        ours = {unit: r for unit, r in records.items() if r is not None and r.get("nonce") == nonce}
        if not ours and polls <= STALE_POLLS and not state.get("seen_running"):
            return {unit: f"starting (session {s['session']}, {where})" for unit, s in group}  # the previous session's
        return {
            unit: self.settle(unit, s, ours.get(unit), (status, failure, where), folder, lines) for unit, s in group
        }

    def running(self, group: Group, status: str, where: str, polls: int) -> dict[Unit, str]:
        """The progress lines of a running notebook's units (epoch, ETA from its log every few polls)."""
        lines = None
        if polls % PROGRESS_EVERY == 1:
            _, lines = self.fetch(group[0][0], group[0][1]["kernel"], "live")
        out = {}
        for unit, state in group:
            state["seen_running"] = True
            if lines is not None:
                state["progress"] = self.progress(unit, state, lines) or state.get("progress", "")
            if read_state(self.cfg, unit).get("nonce") == state["nonce"]:
                write_state(self.cfg, unit, state)
            out[unit] = f"{status} (session {state['session']}, {where}{state.get('progress', '')})"
        return out

    def progress(self, unit: Unit, state: dict[str, Any], lines: list[str]) -> str:
        """', epoch 2/5, ETA 3m10s' from the unit's lines of the notebook's log, or '' when it shows none yet."""
        found = progress_of(lines_of(unit, lines))
        if found is None:
            return ""
        done, total = found
        elapsed = time.time() - float(state.get("pushed", time.time()))
        eta = f", ETA {format_eta(elapsed / done * (total - done))}" if done else ""
        return f", epoch {done}/{total}{eta}"

    def settle(self, unit: Unit, state: dict[str, Any], record: dict[str, Any] | None, ended: tuple[str, str, str],
               folder: Path, lines: list[str]) -> str:  # fmt: skip
        """What the ended notebook means for one of its units (see the module's docstring); its line."""
        status, failure, where = ended
        tail = lines_of(unit, lines)[-LOG_LINES:]
        if record is not None and record.get("state") == "done":
            return self.land(unit, state, record, folder, tail)
        if record is not None and record.get("state") == "stopped":
            why = f"stopped at its time budget after {record.get('epochs_done')} epochs"
            return self.queue(unit, {**state, "checkpoint": state["kernel"], "strikes": 0}, why)
        if record is not None:
            return self.fail(unit, state, f"its training in the notebook {where} exited with code "
                             f"{record.get('exit_code')}", tail)  # fmt: skip
        if status in KERNEL_FAILED and TIMED_OUT.search(failure):
            if state.get("strikes", 0) >= 1:
                return self.fail(unit, state, f"two sessions in a row hit Kaggle's time limit ({failure}); lower "
                                 "kaggle.session_limit so each session stops in time", tail)  # fmt: skip
            strikes = state.get("strikes", 0) + 1
            return self.queue(unit, {**state, "strikes": strikes}, f"killed at Kaggle's time limit ({failure}); "
                              "resuming from its last checkpoint")  # fmt: skip
        return self.fail(unit, state, f"the notebook {where} ended {status}{': ' + failure if failure else ''}", tail)

    def land(self, unit: Unit, state: dict[str, Any], record: dict[str, Any], folder: Path, tail: list[str]) -> str:
        """Check and land a finished unit, then tell the trackers (the "fold_trained" event, as train emits it)."""
        try:
            remote_land.land(self.cfg, unit, folder, record)
        except UserError as exc:
            return self.fail(unit, state, str(exc), tail)
        write_state(self.cfg, unit, {**state, "state": DONE, "landed": time.time()})
        if unit.seed is None:  # as train: a bag member's log stays in its folder (the trackers sync folds)
            events.emit("fold_trained", cfg=self.cfg, fold=unit.fold)
        return (
            f"done (session {state['session']}, {record.get('epochs_done')} epochs) -> {weights_path(self.cfg, unit)}"
        )

    def queue(self, unit: Unit, state: dict[str, Any], why: str) -> str:
        """The unit's next session waits to be pushed (pipeline.kaggle.remote_push.Pusher.top_up)."""
        if state["session"] >= MAX_SESSIONS:
            return self.fail(unit, state, f"{MAX_SESSIONS} sessions without finishing; raise kaggle.session_limit", [])
        kept = {k: v for k, v in state.items() if k not in ("seen_running", "progress", "nonce")}
        write_state(self.cfg, unit, {**kept, "state": QUEUED})
        log.info("%s: session %d %s; resuming in session %d", unit.label, state["session"], why,
                 state["session"] + 1)  # fmt: skip
        return f"queued for session {state['session'] + 1}"

    def fail(self, unit: Unit, state: dict[str, Any], message: str, tail: list[str]) -> str:
        staged = Unit.from_key(state["notebook"][0]) if state.get("notebook") else unit  # a pair's: its first unit's
        folder = paths.for_config(self.cfg).member(staged.seed).remote_work(staged.fold)
        write_state(self.cfg, unit, {**state, "state": FAILED, "message": message, "log": tail,
                                     "output": str(folder)})  # fmt: skip
        return f"failed: {message}"
