"""pseudo: write a pseudo-label round as a new experiment config (`make pseudo CONFIG=... FROM=<exp|blend>`).

Reads configs/<comp>/<exp>.yaml (the recipe to repeat) and checks the source FROM (pipeline.data.sources: finished,
same folds.csv and test ids, same SAMPLE, not the new experiment itself); writes configs/<comp>/<name>.yaml: the
experiment's keys with train.pseudo.from set to FROM, and prints its path on stdout (Make then runs
`make all CONFIG=<that path>`). The name: --name (Make: NAME=), else <exp>-pseudo, and a round from a
pseudo experiment counts on: <x>-pseudo -> <x>-pseudo2 -> <x>-pseudo3. An existing file with other contents
is refused (pass another NAME=); the same contents are reused, so re-running `make pseudo` resumes the round.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from pathlib import Path

from pipeline.core import artifacts
from pipeline.core.cli import config_from_args
from pipeline.core.config import apply_override, config_paths, dump_yaml, read_yaml
from pipeline.core.errors import UserError
from pipeline.data import sources

log = logging.getLogger(__name__)

ROUND = re.compile(r"^(?P<base>.+)-pseudo(?P<n>\d*)$")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def next_round_name(exp: str) -> str:
    """baseline -> baseline-pseudo; baseline-pseudo -> baseline-pseudo2; baseline-pseudo2 -> baseline-pseudo3."""
    match = ROUND.match(exp)
    if not match:
        return f"{exp}-pseudo"
    return f"{match['base']}-pseudo{int(match['n'] or 1) + 1}"


def write_round(config: Path, source: str, name: str, overrides: list[str]) -> Path:
    """configs/<comp>/<name>.yaml: `config`'s keys with train.pseudo.from = `source`, after checking the source."""
    from pipeline.core.config import load_config

    _, _, exp = config_paths(config)
    if not exp:
        raise UserError(f"make pseudo: CONFIG={config} is the competition file; pass an experiment's config")
    if not NAME.fullmatch(name) or name == "competition":
        raise UserError(f"NAME={name!r}: an experiment name of letters, digits, '-', '_' or '.'")
    values = read_yaml(config)
    apply_override(values, ["train", "pseudo", "from"], source, "train.pseudo.from")
    cfg = load_config(config, overrides)
    new = dataclasses.replace(cfg, exp=name, train=dataclasses.replace(
        cfg.train, pseudo=dataclasses.replace(cfg.train.pseudo, from_=source)))  # fmt: skip
    sources.resolve(new, "pseudo")  # refuse an unusable source before writing anything
    path = config.parent / f"{name}.yaml"
    text = f"# Pseudo-label round: {exp}'s recipe, trained with the test rows {source} predicted (make pseudo).\n"
    text += dump_yaml(values)
    if path.exists() and path.read_text() != text:
        raise UserError(f"{path} exists with other contents; pass another NAME= or delete it")
    if not path.exists():
        artifacts.write_text(path, text)
    load_config(path, overrides)  # the written file loads (keys and types checked)
    log.info("pseudo: %s -> %s (train.pseudo.from: %s)", config, path, source)
    return path


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    if not args.source:
        raise UserError("make pseudo: FROM=<experiment or blend> is required (python -m pipeline pseudo --from NAME)")
    path = write_round(Path(args.config), args.source, args.name or next_round_name(cfg.exp), args.overrides)
    print(path)  # Make reads it: `make all CONFIG=<this>`
