"""sweep.yaml: what a hyper-parameter sweep searches and how long it may run, checked before any trial starts.

    trials: 20                 # and/or time: 2h (no new trial starts after it)
    fold: 0                    # each trial trains this one fold (default 0)
    sample: 500                # optional: each trial a SAMPLE=N run (a stratified N-image subset)
    prune: {startup_trials: 5, warmup_epochs: 1}   # MedianPruner on per-epoch validation scores; false: off
    params:
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      train.epochs: {low: 3, high: 10}          # integer bounds: integers
      train.label_smoothing: {low: 0.0, high: 0.2, step: 0.05}
      model.name: {choices: [resnet18, tf_efficientnet_lite0]}

Any config key can be searched; every bound and choice is loaded through the real config first, so a wrong
key, type or range is one `error:` line naming the sweep file and the key before anything trains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError

KEYS = ("name", "trials", "time", "fold", "sample", "prune", "seed", "params")


@dataclass
class Param:
    key: str  # dotted config key
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def values_to_check(self) -> list[Any]:
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def spec(self) -> dict[str, Any]:
        """The JSON identity of this parameter (a resumed study must search the same space)."""
        if self.choices is not None:
            return {"choices": self.choices}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass
class SweepSpec:
    path: Path
    name: str
    params: list[Param]
    trials: int | None = None
    time_s: float | None = None
    fold: int = 0
    sample: int = 0
    prune: dict[str, int] | None = field(default_factory=lambda: {"startup_trials": 5, "warmup_epochs": 1})
    seed: int = 0

    def identity(self) -> str:
        return json.dumps({p.key: p.spec() for p in self.params}, sort_keys=True)


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e-3 (no dot) as a string
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    return value


def _count(values: dict[str, Any], key: str, where: str, minimum: int) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {key}: expected an integer >= {minimum}, got {value!r}")
    return value


def parse_param(key: str, value: Any, where: str) -> Param:
    here = f"{where}: params.{key}"
    if not isinstance(value, dict):
        raise ConfigError(f"{here}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {value!r}")
    unknown = sorted(set(value) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise ConfigError(f"{here}: unknown key(s) {', '.join(unknown)}; known: choices, high, log, low, step")
    if "choices" in value:
        if set(value) != {"choices"} or not isinstance(value["choices"], list) or not value["choices"]:
            raise ConfigError(f"{here}: choices must be a non-empty list, alone (no low/high)")
        return Param(key, choices=value["choices"])
    if "low" not in value or "high" not in value:
        raise ConfigError(f"{here}: needs both low and high (or choices: [..])")
    low, high = _number(value["low"], f"{here}.low"), _number(value["high"], f"{here}.high")
    if not low < high:
        raise ConfigError(f"{here}: low ({low}) must be below high ({high})")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{here}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{here}: log: true needs low > 0, got {low}")
    step = _number(value["step"], f"{here}.step") if value.get("step") is not None else None
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{here}.step: must be positive, and cannot be combined with log: true")
    return Param(key, low, high, log, step)


def parse_time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    from pipeline.training.checkpoint import parse_budget

    try:
        seconds = parse_budget(value if not isinstance(value, bool) else "x")
    except ConfigError:
        raise ConfigError(f"{where}: time: {value!r} is not a duration like 2h, 90m, 1h30m or 3600") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise ConfigError(f"{where}: time: must be positive, got {value!r}")
    return seconds


def parse_prune(value: Any, where: str) -> dict[str, int] | None:
    if value is False:
        return None
    if value is None or value is True:
        value = {}
    if not isinstance(value, dict) or set(value) - {"startup_trials", "warmup_epochs"}:
        raise ConfigError(f"{where}: prune: expected false or {{startup_trials: N, warmup_epochs: N}}, got {value!r}")
    return {"startup_trials": _count(value, "startup_trials", f"{where}: prune", 0) or 5,
            "warmup_epochs": _count(value, "warmup_epochs", f"{where}: prune", 0) or 0}  # fmt: skip


def load_spec(path: Path | str, default_name: str) -> SweepSpec:
    """Read and check sweep.yaml (shape, types, budgets); `check_against_config` checks the keys' values."""
    from pipeline.core.config import read_yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} not found; write one (see README: Sweeps) and pass SWEEP=<file>")
    values = read_yaml(path)
    where = str(path)
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    params = values.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"{where}: params: expected a mapping of config keys to search, e.g. train.lr: {{low: .., high: ..}}"
        )  # noqa: E501
    trials, time_s = _count(values, "trials", where, 1), parse_time(values.get("time"), where)
    if trials is None and time_s is None:
        raise ConfigError(f"{where}: set a budget: trials: N and/or time: 2h")
    name = values.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{where}: name: expected a plain folder name, got {name!r}")
    parsed = [parse_param(str(k), v, where) for k, v in params.items()]
    fold, sample, seed = (
        _count(values, key, where, low) or 0 for key, low in (("fold", 0), ("sample", 1), ("seed", 0))
    )
    return SweepSpec(path, name, parsed, trials, time_s, fold, sample, parse_prune(values.get("prune"), where), seed)


def check_against_config(spec: SweepSpec, config: Path, overrides: list[str]) -> None:
    """Load the experiment with every bound and choice of every parameter: the config's own checks name the key."""
    from pipeline.core.config import load_config

    base = load_config(config, overrides)
    if not 0 <= spec.fold < base.folds.n_folds:
        raise ConfigError(f"{spec.path}: fold: {spec.fold} is not a fold (folds.n_folds is {base.folds.n_folds})")
    for param in spec.params:
        for value in param.values_to_check():
            try:
                load_config(config, [*overrides, f"{param.key}={json.dumps(value)}"])
            except ConfigError as exc:
                raise ConfigError(f"{spec.path}: params.{param.key} = {value!r}: {exc}") from None
