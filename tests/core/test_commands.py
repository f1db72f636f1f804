"""The command records (pipeline.commands) are the one place a command is declared: the parser, `make help`, the
Makefile's targets and the notebook API all follow them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands import COMMANDS
from pipeline.commands.cli import build_parser, run_command
from pipeline.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_record_parses_with_its_flags(name: str) -> None:
    command = COMMANDS[name]
    args = build_parser().parse_args([name, "--config", "configs/x/y.yaml", "--set", "a=1 b=2"])
    assert args.command == name and args.config == "configs/x/y.yaml"
    for flag, options in command.flags:
        dest = options.get("dest", flag.lstrip("-").replace("-", "_"))
        assert hasattr(args, dest), (name, flag)


def test_only_commands_that_accept_refit_take_fold_refit() -> None:
    takers = {c.name for c in COMMANDS.values() if c.accepts_refit}
    assert takers == {"train", "predict"}
    assert build_parser().parse_args(["train", "--fold", "refit"]).fold < 0
    with pytest.raises(UserError, match="only train and predict take --fold refit"):
        build_parser().parse_args(["ensemble", "--fold", "refit"])
    with pytest.raises(UserError, match="--fold: expected a fold number or refit, got 'x'"):
        build_parser().parse_args(["train", "--fold", "x"])


def test_unknown_command_is_one_user_error() -> None:
    with pytest.raises(UserError, match="invalid choice: 'trian'"):
        run_command(["trian"])


def make_rules() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), flags=re.M))


def test_every_make_target_of_a_record_is_a_rule_of_the_makefile() -> None:
    missing = {c.target for c in COMMANDS.values() if c.target} - make_rules()
    assert not missing, missing


def test_make_help_prints_each_record_once_with_its_help() -> None:
    """make help runs with the system Python before any virtualenv exists: no third-party import."""
    out = subprocess.run(["python3", "-S", str(REPO / "pipeline/commands/make_help.py"), str(REPO / "Makefile")],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()}
    for command in COMMANDS.values():
        if command.target:
            assert lines[command.target] == command.help
    assert {"all", "test", "test-fast", "help"} <= set(lines)


def test_the_notebook_api_runs_commands_through_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """api.run_stage is run_command: a record's module is what runs, with the same parsed arguments."""
    import types

    from pipeline import api

    seen = []
    fake = types.ModuleType("fake_stage")
    fake.run = lambda args: seen.append((args.command, args.overrides, args.fold))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_stage", fake)
    monkeypatch.setitem(
        COMMANDS, "doctor", COMMANDS["doctor"].__class__("doctor", "fake_stage", "x", reads_folds=False)
    )
    api.run_stage("doctor", ["--set", "a=1 b=2", "--fold", "3"])
    assert seen == [("doctor", ["a=1", "b=2"], 3)]
    with pytest.raises(api.PipelineError, match="^error: "):
        api.run_stage("doctor", ["--fold", "refit"])
