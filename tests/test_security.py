"""Security rules, checked on the package's source (every .py under pipeline/, by its syntax tree, not by grep).

- Every torch.load passes weights_only=True: tensors and plain containers only, never pickled code. Weights files
  the user names (model.pretrained) go through timm's loader, which does the same; tests/test_errors.py proves it
  end to end with a pickle whose payload would create a marker file (checkpoints and fold weights too).
- No pickle/marshal/shelve loading, no yaml.load without the safe loader, no eval/exec.
- No shell: no shell=True, no os.system/os.popen, and every subprocess command is an argument list, never a string.
Zip entries with absolute or `..` paths (tests/test_kaggle.py) and the Kaggle key never reaching a log or a file
(tests/test_kaggle.py::test_the_key_is_never_written_printed_or_logged) are tested where downloads are.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.builders import REPO

SOURCES = sorted((REPO / "pipeline").rglob("*.py"))
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def dotted(node: ast.AST) -> str:
    """`torch.load` for the callee of torch.load(...); "" for anything that is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def calls(path: Path) -> list[tuple[int, str, ast.Call]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, dotted(node.func), node) for node in ast.walk(tree) if isinstance(node, ast.Call)]


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(path: Path, root: Path = REPO) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module in ("torch", "pickle")
            and any(alias.name in ("load", "loads") for alias in node.names)
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}: `from {node.module} import load` hides the check")
    for line, name, call in calls(path):
        where = f"{path.relative_to(root)}:{line}"
        if name.endswith("torch.load") and not is_true(keyword(call, "weights_only")):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "shelve.open", "dill.load"):
            found.append(f"{where}: {name} can run code from the file")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load") and "Safe" not in ast.unparse(call):
            found.append(f"{where}: {name} without the safe loader (use yaml.safe_load)")
        if name in ("eval", "exec"):
            found.append(f"{where}: {name}")
        if is_true(keyword(call, "shell")):
            found.append(f"{where}: shell=True")
        if name in ("os.system", "os.popen") or name.startswith(("os.exec", "os.spawn")):
            found.append(f"{where}: {name} goes through a shell or replaces the process")
        if name.startswith("subprocess.") and name.split(".")[-1] in SUBPROCESS_CALLS:
            command = call.args[0] if call.args else keyword(call, "args")
            if isinstance(command, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                found.append(f"{where}: {name} with a string command (pass a list of arguments)")
    return found


def test_the_package_has_sources() -> None:
    assert len(SOURCES) > 20 and (REPO / "pipeline" / "training" / "checkpoint.py") in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO / "pipeline")))
def test_no_unsafe_loading_and_no_shell(path: Path) -> None:
    assert violations(path) == []


def test_the_rules_catch_what_they_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, pickle, subprocess, torch, yaml\n"
        "torch.load('w.pt')\n"
        "torch.load('w.pt', weights_only=False)\n"
        "pickle.loads(b'')\n"
        "yaml.load('a: 1')\n"
        "subprocess.run('ls ' + name, shell=True)\n"
        "subprocess.run(f'git {x}')\n"
        "os.system('ls')\n"
        "eval('1')\n"
    )
    good = tmp_path / "good.py"
    good.write_text(
        "import subprocess, torch, yaml\n"
        "torch.load('w.pt', map_location='cpu', weights_only=True)\n"
        "yaml.safe_load('a: 1')\n"
        "subprocess.run(['git', 'status'], capture_output=True)\n"
    )
    assert len(violations(bad, tmp_path)) == 9 and violations(good, tmp_path) == []
