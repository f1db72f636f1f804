"""Architecture rules, checked on the source: no import cycle (function-level imports count), no stage importing
another stage, no function longer than a reader can hold in their head."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# The modules behind `python -m pipeline <command>` (and the Kernel's entry point): each may import building
# blocks, never another stage. __main__ and kernel_script only dispatch to stages.
STAGES = {
    "kaggle.download", "data.init", "data.folds", "training.train", "inference.predict", "inference.ensemble",
    "inference.submission", "kaggle.submit", "kaggle.leaderboard", "benchmarks.data_path", "inference.blend",
    "reporting.summary", "training.lr_find", "reporting.report", "reporting.experiments", "reporting.doctor",
    "kaggle.bundle", "kaggle.push", "kaggle.submit_kernel", "kaggle.kernel_predict", "tuning.sweep",
    "training.pseudo", "kaggle.remote",
}  # fmt: skip
# Building blocks that also answer a command whose run() only calls the block's own functions and prints: stages
# may use them like any block (train/predict read the cache, init prepares weights, report draws the plan).
BLOCKS_WITH_A_COMMAND = {"data.cache", "training.weights", "reporting.planner", "reporting.tracking"}
# pipeline/ itself holds only entry modules; everything else lives in a sub-package by concern.
ENTRY_MODULES = {"__init__", "__main__", "api"}
MAX_LINES = 80


@functools.cache
def modules() -> dict[str, ast.Module]:
    files = [p for p in PACKAGE.rglob("*.py")]
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): ast.parse(p.read_text()) for p in files}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Every pipeline module `tree` imports, anywhere in the file (inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.startswith("pipeline."):
                short = name.removeprefix("pipeline.")
                found |= {short} & known
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imports(tree, known) - {name} for name, tree in trees.items()}


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, cycles


def test_stages_import_only_building_blocks() -> None:
    edges = graph()
    assert STAGES | BLOCKS_WITH_A_COMMAND <= set(edges), STAGES - set(edges)
    reaching = {f"{s} -> {t}" for s in STAGES for t in edges[s] & STAGES}
    assert not reaching, sorted(reaching)


@pytest.mark.parametrize("name", sorted(modules()))
def test_functions_fit_in_a_head(name: str) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(modules()[name])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, f"pipeline/{name}.py: {long}"


def test_pipeline_holds_only_entry_modules_beside_its_packages() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == ENTRY_MODULES, sorted(top - ENTRY_MODULES)
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == {"core", "data", "training", "inference", "kaggle", "reporting", "tuning", "benchmarks"}


def test_every_command_is_a_known_stage_or_block() -> None:
    from pipeline.core.cli import COMMANDS

    modules_of_commands = {module.removeprefix("pipeline.") for module, _ in COMMANDS.values()}
    assert modules_of_commands <= STAGES | BLOCKS_WITH_A_COMMAND, sorted(
        modules_of_commands - STAGES - BLOCKS_WITH_A_COMMAND
    )
