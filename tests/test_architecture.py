"""Architecture rules, checked on the source: layers that point one way and no import cycle (function-level and
importlib imports count), no stage importing another stage, no function longer than a reader can hold in their head."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Layers, lowest first: a module may import its own layer or lower ones, never a higher one, not even inside a function
# or through importlib with a constant name. api (the notebook API) and commands (the CLI) are the top: api runs
# commands, so it may import them; the command layer never imports api.
RANK = {"core": 0, "data": 1, "training": 2, "inference": 3, "kaggle": 4, "reporting": 4, "tuning": 5,
        "benchmarks": 5, "api": 6, "commands": 6, "__main__": 7, "__init__": 0}  # fmt: skip
# pipeline/ itself holds only entry modules; everything else lives in a sub-package by concern.
ENTRY_MODULES = {"__init__", "__main__", "api"}
MAX_LINES = 80


@functools.cache
def modules() -> dict[str, ast.Module]:
    files = [p for p in PACKAGE.rglob("*.py")]
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): ast.parse(p.read_text()) for p in files}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Every pipeline module `tree` imports, anywhere in the file (inside functions too), importlib included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
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


def layer(module: str) -> int:
    return RANK[module.split(".")[0]]


def test_layers_point_one_way() -> None:
    """No exceptions list: every upward import is a failure, function-level and importlib ones included."""
    edges = graph()
    upward = sorted(f"{s} -> {t}" for s, targets in edges.items() for t in targets if layer(t) > layer(s))
    assert not upward, upward


def test_commands_never_import_the_notebook_api() -> None:
    assert not [f"{s} -> {t}" for s, ts in graph().items() if s.startswith("commands") for t in ts if t == "api"]


def stages() -> set[str]:
    """The modules behind `python -m pipeline <command>` (the command records): each may import building blocks,
    never another stage. A record marked stage=False is a building block's own command: stages may use that block."""
    from pipeline.commands import COMMANDS

    return {c.module.removeprefix("pipeline.") for c in COMMANDS.values() if c.stage}


def test_stages_import_only_building_blocks() -> None:
    edges, names = graph(), stages()
    assert names <= set(edges), names - set(edges)
    reaching = {f"{s} -> {t}" for s in names for t in edges[s] & names if not s.startswith("commands")}
    assert not reaching, sorted(reaching)


def test_kaggle_building_blocks_import_no_stage() -> None:
    """A Kaggle building block (remote_bundle, dataset_upload, ...) shares code with stages through other blocks, never
    by importing a stage (kaggle-bundle, kaggle-push): a stage's helpers that others need move into a block."""
    edges, names = graph(), stages()
    blocks = [name for name in edges if name.startswith("kaggle.") and name not in names]
    reaching = sorted(f"{s} -> {t}" for s in blocks for t in edges[s] & names)
    assert not reaching, reaching


def test_building_blocks_never_import_a_stage() -> None:
    """A stage's module is its command's entry; what several need lives in a building block (the training loop in
    training.loop, a fold's model in inference.fold_model), so no block depends on a stage. The command layer and
    the notebook API sit above the stages and may."""
    edges, names = graph(), stages()
    top = ("commands", "api", "__main__")
    reaching = sorted(f"{s} -> {t}" for s, ts in edges.items() if s not in names and not s.startswith(top)
                      for t in ts & names)  # fmt: skip
    assert not reaching, reaching


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
    assert packages == {
        "core",
        "data",
        "training",
        "inference",
        "kaggle",
        "reporting",
        "tuning",
        "benchmarks",
        "commands",
    }


def test_every_command_record_names_a_module_with_run() -> None:
    from pipeline.commands import COMMANDS

    for command in COMMANDS.values():
        tree = modules()[command.module.removeprefix("pipeline.")]
        assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body), command.module
