"""RUNNER=kaggle at home: push the experiment's waiting units as Kaggle notebooks, within the account's limits.

Reads each unit's remote.json (pipeline.kaggle.remote_state), the landed units' log.csv (how long a unit takes) and
the weekly GPU quota (`kaggle quota`); writes each pushed unit's kernel folder (fold<k>/.remote/kernel/ of the
notebook's first unit: kernel.py, kernel-metadata.json) and its remote.json (state running: kernel, version, nonce,
session, the units it shares the notebook with).

A notebook trains `units_per_notebook` units at once: two on a T4 x2 (one per GPU, as FOLD_GPUS does at home), else
one; `kaggle.units_per_notebook` overrides it. Units waiting for a push are, in order: the unit Make asked for,
units whose session stopped or was killed (queued; two that stopped together stay together, a lone one is paired
with the next waiting unit), then pending ones (never pushed). A notebook's kernel is named after its units
(`fold0`, `fold0-fold1`), a new version of it per session; a unit that resumes gets the kernel holding its last
checkpoint attached (the notebook restores it from that output). No more than `kaggle.sessions` notebooks run at
once (a push Kaggle refuses for too many sessions waits), and none is pushed when the GPU quota left cannot cover
one more notebook as long as a landed unit took.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from pipeline.core import paths
from pipeline.core.config import Config
from pipeline.core.errors import UserError
from pipeline.kaggle import remote_bundle
from pipeline.kaggle.remote_state import (
    QUEUED,
    RUNNING,
    Unit,
    notebook_key,
    read_state,
    units_of,
    weights_path,
    write_state,
)

log = logging.getLogger(__name__)

SESSION_BUSY = re.compile(r"(too many|concurrent|maximum|limit)\W+(\w+\W+){0,6}sessions?|sessions?\W+(\w+\W+){0,4}"
                          r"(limit|maximum)", re.IGNORECASE)  # fmt: skip
GPUS = {"t4x2": 2, "l4": 1, "p100": 1, "none": 0}  # GPUs per notebook of each kaggle.accelerator


def session_budget(cfg: Config) -> tuple[float, float]:
    """(session limit, training time budget per session) in seconds: the budget stays a margin under the limit for
    the install, the data and packing the output, or is the user's own train.time_budget when that is smaller."""
    from pipeline.training.checkpoint import parse_budget

    limit = parse_budget(cfg.kaggle.session_limit)
    budget = limit - min(1800.0, 0.25 * limit)
    own = parse_budget(cfg.train.time_budget)
    return limit, min(budget, own) if own else budget


def units_per_notebook(cfg: Config, accelerator: str) -> int:
    """How many units one notebook trains: kaggle.units_per_notebook, else one per GPU of a T4 x2 (else 1).
    Two units need two GPUs, or none (CPU: two processes)."""
    gpus = GPUS.get(accelerator, 1)
    chosen = cfg.kaggle.units_per_notebook or (2 if gpus == 2 else 1)
    if chosen > 1 and gpus == 1:
        raise UserError(f"kaggle.units_per_notebook: {chosen} needs a GPU per unit, and accelerator {accelerator} has "
                        "one; use kaggle.accelerator t4x2, or kaggle.units_per_notebook: 1")  # fmt: skip
    return chosen


def running_notebooks(cfg: Config) -> dict[str, list[tuple[Unit, dict[str, Any]]]]:
    """{nonce: [(unit, its state), ...]} of the notebooks running now, units in Make's order."""
    found: dict[str, list[tuple[Unit, dict[str, Any]]]] = {}
    for unit in units_of(cfg):
        state = read_state(cfg, unit)
        if state.get("state") == RUNNING:
            found.setdefault(str(state.get("nonce")), []).append((unit, state))
    return found


class Pusher:
    """Pushes the experiment's waiting units; `kaggle` is the client (pipeline.kaggle.client.Kaggle)."""

    def __init__(self, cfg: Config, user: str, accelerator: str, kaggle: Any) -> None:  # noqa: ANN401
        self.cfg, self.user, self.accelerator, self.kaggle = cfg, user, accelerator, kaggle
        self.limit, self.budget = session_budget(cfg)
        self.per_notebook = units_per_notebook(cfg, accelerator)
        self.dataset = ""
        self.busy_said = False
        self.quota_said = ""  # why top_up pushed nothing (the weekly GPU quota), when that is why

    def upload(self) -> None:
        """The experiment's training dataset, uploaded when it changed (pipeline.kaggle.remote_bundle)."""
        bundle = remote_bundle.build_train_bundle(self.cfg, self.user)
        remote_bundle.upload(self.kaggle, self.cfg, bundle)
        self.dataset = bundle.ref

    def push(self, units: list[Unit]) -> bool:
        """Push one notebook training `units` (each its next session); False when Kaggle refused it for too many
        sessions (retried later)."""
        key = notebook_key(units)
        ref, title = remote_bundle.kernel_names(self.cfg, key, self.user)
        nonce = secrets.token_hex(8)
        states = {unit: read_state(self.cfg, unit) for unit in units}
        specs = [{"unit": u.key, "fold": u.fold, "seed": "" if u.seed is None else u.seed,
                  "session": int(states[u].get("session", 0)) + 1} for u in units]  # fmt: skip
        settings = {"bundle": self.dataset.split("/", 1)[1], "comp": self.cfg.comp, "exp": self.cfg.exp, "unit": key,
                    "nonce": nonce, "session": specs[0]["session"], "units": specs,
                    "time_budget": round(self.budget, 3),
                    "internet": "1" if self.cfg.kaggle.internet else ""}  # str/int/list only (kernel.py)  # fmt: skip
        checkpoints = sorted({str(s["checkpoint"]) for s in states.values() if s.get("checkpoint")})
        folder = paths.for_config(self.cfg).member(units[0].seed).remote_work(units[0].fold) / "kernel"
        remote_bundle.write_kernel(folder, self.cfg, ref, title, settings, self.dataset, self.accelerator, checkpoints)
        try:
            answer = self.kaggle.push_kernel(ref, folder, timeout=int(self.limit))
        except UserError as exc:
            if SESSION_BUSY.search(str(exc)):
                if not self.busy_said:
                    log.info("remote: Kaggle runs as many sessions as it allows; %s waits for a free one",
                             " and ".join(u.label for u in units))  # fmt: skip
                self.busy_said = True
                return False
            raise
        self.busy_said = False
        version = getattr(answer, "version_number", None)
        for unit, spec in zip(units, specs, strict=True):
            old = states[unit]
            write_state(self.cfg, unit, {
                "state": RUNNING, "kernel": ref, "version": version, "nonce": nonce, "session": spec["session"],
                "pushed": time.time(), "notebook": [u.key for u in units], "checkpoint": old.get("checkpoint"),
                "versions": [*old.get("versions", []), f"{ref} v{version}"], "strikes": old.get("strikes", 0),
            })  # fmt: skip
        return True

    def quota_allows(self, running: int) -> bool:
        """The weekly GPU quota left covers one more notebook besides the `running` ones (as long as a unit took)."""
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
                           f"another notebook (~{need:.1f} h each, {running} running)")  # fmt: skip
        return False

    def measured_hours(self) -> float:
        """Hours one unit took: the longest training time a landed unit's log.csv recorded (0 when none has); the
        units of a notebook train at once, so it is a notebook's too."""
        from pipeline.data.tables import read_csv

        longest = 0.0
        for unit in units_of(self.cfg):
            log_csv = paths.for_config(self.cfg).member(unit.seed).train_log(unit.fold)
            if weights_path(self.cfg, unit).is_file() and log_csv.is_file():
                table = read_csv(log_csv, "training log")
                if "seconds" in table.columns:
                    longest = max(longest, float(table["seconds"].astype(float).sum()) / 3600)
        return longest * 1.2

    def waiting(self, first: Unit) -> list[Unit]:
        """Units to push, in order: `first` (when it waits), the queued ones (by the kernel they stopped in, so the
        units of one notebook stay together), then the pending ones in Make's order."""
        queued, pending = [], []
        for unit in units_of(self.cfg):
            state = read_state(self.cfg, unit)
            if state.get("state") == QUEUED:
                queued.append((str(state.get("kernel")), unit))
            elif not state and not weights_path(self.cfg, unit).is_file():
                pending.append(unit)
        order = [unit for _, unit in sorted(queued, key=lambda item: item[0])] + pending
        return sorted(order, key=lambda unit: unit != first)  # stable: the rest keep their order

    def pick(self, waiting: list[Unit]) -> list[Unit]:
        """The next notebook's units: the first waiting one, with partners from its own last notebook first, then
        units that wait alone (pending, or queued without their partner), and a unit of another waiting pair last."""
        kernels = {unit: read_state(self.cfg, unit).get("kernel") for unit in waiting}
        head, rest = waiting[0], waiting[1:]

        def rank(unit: Unit) -> int:
            if kernels[head] is not None and kernels[unit] == kernels[head]:
                return 0
            alone = kernels[unit] is None or sum(kernels[u] == kernels[unit] for u in rest) == 1
            return 1 if alone else 2

        return [head, *sorted(rest, key=rank)[: self.per_notebook - 1]]

    def top_up(self, first: Unit) -> list[Unit]:
        """Push waiting units (`first` first) while sessions and quota allow; the units pushed."""
        waiting = self.waiting(first)
        running = len(running_notebooks(self.cfg))
        pushed: list[Unit] = []
        while waiting and running < self.cfg.kaggle.sessions:
            if not self.quota_allows(running):
                break
            units = self.pick(waiting)
            if not self.push(units):
                break
            waiting = [unit for unit in waiting if unit not in units]
            pushed += units
            running += 1
        return pushed
