"""RUNNER=kaggle at home: the training units of an experiment and what each one's remote.json says about it.

A unit is what Make builds with one recipe: a fold, or a seed-bag member (fold, seed). Its state file
data/runs/<comp>/<exp>/fold<k>/[seed<s>/]remote.json (pipeline.core.paths.Paths.remote_state) records the kernel,
the version and nonce of the session it waits for, the units that notebook trains (`notebook`: two on a T4 x2),
the unit's session number, the kernel whose output holds its last checkpoint (`checkpoint`) and what happened; it
survives Ctrl-C, so the next `make` re-attaches to the notebook instead of pushing again. States:

    running   pushed; waiting for the session of `version` (identified by `nonce` in its output and log)
    queued    its session stopped (time budget) or was killed: its next session waits to be pushed, alone or
              paired with another unit
    failed    the notebook failed; `message` and `log` say why (the unit's recipe reports it, then forgets it)
    done      the files came home and were checked; `kernel`, `versions` and `sessions` are their provenance

No state file (and no weights) means pending: not pushed yet. Reads and writes only these files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import describe, members
from pipeline.core.config import Config

RUNNING, QUEUED, FAILED, DONE = "running", "queued", "failed", "done"
EPOCH_LINE = re.compile(r"fold \d+ epoch (\d+)/(\d+):")


@dataclass(frozen=True)
class Unit:
    fold: int
    seed: int | None = None

    @property
    def key(self) -> str:
        """`fold0` or `fold0-seed43`: the unit's name in kernel slugs and unit.json."""
        return f"fold{self.fold}" + (f"-seed{self.seed}" if self.seed is not None else "")

    @property
    def label(self) -> str:
        return describe(self.fold, self.seed)

    @classmethod
    def from_key(cls, key: str) -> Unit:
        fold, _, seed = key.removeprefix("fold").partition("-seed")
        return cls(int(fold), int(seed) if seed else None)


def units_of(cfg: Config) -> list[Unit]:
    """Every training unit of the experiment, in Make's order (fold, then seed)."""
    return [Unit(fold, seed) for fold in range(cfg.folds.n_folds) for seed in members(cfg)]


def state_path(cfg: Config, unit: Unit) -> Path:
    return paths.for_config(cfg).member(unit.seed).remote_state(unit.fold)


def weights_path(cfg: Config, unit: Unit) -> Path:
    return paths.for_config(cfg).member(unit.seed).weights(unit.fold)


def read_state(cfg: Config, unit: Unit) -> dict[str, Any]:
    """The unit's remote.json, or {} (pending, or never remote)."""
    path = state_path(cfg, unit)
    if not path.is_file():
        return {}
    try:
        return dict(artifacts.read_json(path))
    except Exception:  # a state file this version can't read: start the unit over rather than stop
        return {}


def write_state(cfg: Config, unit: Unit, state: dict[str, Any]) -> None:
    artifacts.write_json(state_path(cfg, unit), state)


def clear_state(cfg: Config, unit: Unit) -> None:
    state_path(cfg, unit).unlink(missing_ok=True)


def notebook_key(units: list[Unit]) -> str:
    """The name of a notebook that trains `units`: the unit's key alone, `fold0-fold1` for a pair (its kernel slug)."""
    return "-".join(unit.key for unit in units)


def lines_of(unit: Unit, log_lines: list[str]) -> list[str]:
    """The unit's own lines of a notebook's log (each prefixed `[<unit>] ` by pipeline.kaggle.remote_unit); all of
    them when none is (the notebook failed before its units started)."""
    prefix = f"[{unit.key}] "
    own = [line[len(prefix) :] for line in log_lines if line.startswith(prefix)]
    return own or [line for line in log_lines if not line.startswith("[")]


def progress_of(log_lines: list[str]) -> tuple[int, int] | None:
    """(epochs done, epochs) from the last epoch line train logs ("fold 0 epoch 2/5: loss ..."), or None."""
    for line in reversed(log_lines):
        found = EPOCH_LINE.search(line)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def format_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
