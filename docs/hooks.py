"""MkDocs hook: the reference pages are generated from the code at build time, so they cannot drift from it.

A page holds a marker line `<!-- generated: NAME -->`; `on_page_markdown` replaces it with the markdown of
GENERATORS[NAME]:

    commands      every command record (pipeline.commands.COMMANDS): make target, help, flags, folds, refit
    make-targets  every Make target `make help` lists (pipeline/commands/make_help.py: a command's record, else the
                  Makefile's `## ` comment)
    config        every config key of pipeline/core/schema.py: type, default, range, and its `# comment`
    choices       the schema's named choice lists (module-level tuples of names)
    code-map      every module of the pipeline package, by package in layer order, with its docstring's first sentence

Reads the code only (imports pipeline.commands and pipeline.core.schema, no torch); writes nothing but the pages'
markdown. tests/test_docs.py checks the generated text covers every command, Make target and config key, and builds
the site with `mkdocs build --strict`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


# ---------------------------------------------------------------- markdown helpers


def _text(value: str) -> str:
    """Free text for a table cell: `<comp>` would be read as an HTML tag and `|` as a cell border. Code spans
    (between backticks) are left as written: the tables extension does not split cells inside them."""
    parts = value.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = (
            parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")
            .replace("|", r"\|")
        )  # fmt: skip
    return "`".join(parts)


def _code(value: str) -> str:
    """A code span for a table cell."""
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- commands and Make targets


def make_targets(makefile: Path = ROOT / "Makefile") -> dict[str, str]:
    """target -> help, for every target `make help` lists, read the way `make help` reads them."""
    from pipeline.commands.make_help import help_lines

    return dict(help_lines(makefile.read_text()))


def make_target_of(command: Any) -> str | None:
    """The Make target that runs a command record: `make_target` ("" means the command's own name; None: CLI only)."""
    return command.name if command.make_target == "" else command.make_target


def _default(options: Mapping[str, Any]) -> str:
    if options.get("action") == "store_true":
        return "off"
    if "const" in options:  # `--tta` alone means the const
        return f"{_code(str(options.get('default')))}; alone: {_code(str(options['const']))}"
    default = options.get("default")
    return "" if default is None else _code(str(default))


def _command_section(command: Any) -> str:
    """One command: its help, how to run it, what it checks, and the flags only it takes."""
    lines = [f"### {command.name}", "", _text(command.help), ""]
    run = f"`python -m pipeline {command.name}`"
    target = make_target_of(command)
    lines.append(f"- Run: `make {target}` or {run}" if target else f"- Run: {run} (CLI only)")
    lines.append(f"- Module: `{command.module}`")
    lines.append(
        "- Checks first that folds.csv matches competition.yaml"
        if command.reads_folds
        else "- Does not read folds.csv (no folds check)"
    )
    if command.accepts_refit:
        lines.append("- Takes `--fold refit` (the full-data refit, `make refit`)")
    if command.flags:
        rows = [
            (_code(flag), _default(options), _text(str(options.get("help", "")))) for flag, options in command.flags
        ]
        lines += ["", _table(("its own flag", "default", "does"), rows)]
    return "\n".join(lines) + "\n"


def command_reference(commands: Mapping[str, Any]) -> str:
    """Markdown for every command record: a summary table, then one section per command."""
    rows = [
        (
            f"[`{name}`](#{name})",
            _code(f"make {make_target_of(command)}") if make_target_of(command) else "CLI only",
            _text(command.help),
        )
        for name, command in commands.items()
    ]
    sections = [_command_section(command) for command in commands.values()]
    return _table(("command", "make target", "does"), rows) + "\n\n" + "\n".join(sections)


def make_target_reference(targets: Mapping[str, str], commands: Mapping[str, Any]) -> str:
    """Markdown table of every Make target, with the command record behind it when there is one."""
    behind = {make_target_of(command): name for name, command in commands.items() if make_target_of(command)}
    rows = [
        (
            _code(f"make {target}"),
            _text(help_text),
            f"[`{behind[target]}`](#{behind[target]})" if target in behind else "",
        )
        for target, help_text in targets.items()
    ]
    return _table(("target", "does", "command"), rows)


# ---------------------------------------------------------------- config reference from the schema


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Line -> text of its trailing comment (code before it), and line -> text of a comment-only line."""
    trailing: dict[int, str] = {}
    alone: dict[int, str] = {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        text = token.string.lstrip("#").strip()
        if text.startswith("fmt:") or text.startswith("noqa"):
            continue
        row, col = token.start
        (trailing if lines[row - 1][:col].strip() else alone)[row] = text
    return trailing, alone


def field_comments(schema: ModuleType) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment: its trailing `# ...` (on any of its lines), else the
    comment-only lines right above it."""
    source = inspect.getsource(schema)
    trailing, alone = _comments(source)
    found: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            text = next((trailing[row] for row in range(item.end_lineno, item.lineno - 1, -1) if row in trailing), "")
            if not text:
                above, row = [], item.lineno - 1
                while row in alone:
                    above.insert(0, alone[row])
                    row -= 1
                text = " ".join(above)
            found[(node.name, item.target.id)] = text
    return found


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value if value and value == value.strip() else f'"{value}"'  # "" and " " stay visible
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    return str(value)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_keys(schema: ModuleType) -> list[tuple[str, type, dataclasses.Field]]:
    """Every YAML key of competition.yaml and an experiment yaml, dotted, in schema order, with its section class
    and field; a nested section (train.swa) lists its own keys after it."""
    keys: list[tuple[str, type, dataclasses.Field]] = []

    def walk(cls: type, prefix: str, only: tuple[str, ...] | None) -> None:
        for f in dataclasses.fields(cls):
            key = f.metadata.get("key", f.name)
            if only is not None and key not in only:
                continue
            value = _field_default(f)
            if dataclasses.is_dataclass(value):
                walk(type(value), f"{prefix}{key}.", None)
            else:
                keys.append((f"{prefix}{key}", cls, f))

    walk(schema.Config, "", tuple(schema.COMPETITION_KEYS) + tuple(schema.EXPERIMENT_KEYS))
    return keys


def config_reference(schema: ModuleType) -> str:
    """Markdown: one table per file (competition.yaml, the experiment yaml), one row per key."""
    comments = field_comments(schema)
    keys = config_keys(schema)
    out = []
    for title, top in (
        ("competition.yaml", schema.COMPETITION_KEYS),
        ("the experiment yaml (configs/&lt;comp&gt;/&lt;exp&gt;.yaml)", schema.EXPERIMENT_KEYS),
    ):
        rows = []
        for key, cls, f in keys:
            if key.split(".")[0] not in top:
                continue
            allowed = f.metadata.get("range")
            rows.append(
                (
                    _code(key),
                    _code(str(f.type)),
                    _code(_yaml(_field_default(f))),
                    _text(str(allowed)) if allowed is not None else "",
                    _text(comments.get((cls.__name__, f.name), "")),
                )
            )
        out.append(f"### {title}\n\n" + _table(("key", "type", "default", "allowed", "meaning"), rows))
    return "\n\n".join(out) + "\n"


def choice_lists(schema: ModuleType) -> dict[str, tuple[tuple[str, ...], str]]:
    """The schema's module-level tuples of names (TASKS, ACCELERATORS, ...): name -> (values, its comment)."""
    source = inspect.getsource(schema)
    trailing, alone = _comments(source)
    found = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        value = getattr(schema, name, None)
        if isinstance(value, tuple) and value and all(isinstance(item, str) for item in value):
            found[name] = (value, trailing.get(node.end_lineno, "") or alone.get(node.lineno - 1, ""))
    return found


def choices_reference(schema: ModuleType) -> str:
    rows = [
        (_code(name), ", ".join(_code(v) for v in values), _text(comment))
        for name, (values, comment) in choice_lists(schema).items()
    ]
    return _table(("list", "names", "where"), rows) + "\n"


# ---------------------------------------------------------------- the code map from the modules' docstrings

LAYERS = ("core", "data", "training", "inference", "kaggle", "reporting", "tuning", "benchmarks", "api", "commands")


def _summary(path: Path) -> str:
    """A module's docstring's first sentence (of its first paragraph), read without importing the module."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
    return sentence


def code_map(package: Path = ROOT / "pipeline") -> str:
    """Markdown: one table per package (layer order first), one row per module with its docstring's summary."""
    units = {p.stem if p.is_file() else p.name: p for p in package.iterdir() if _is_unit(p)}
    order = [name for name in LAYERS if name in units] + sorted(set(units) - set(LAYERS))
    out = []
    for name in order:
        path = units[name]
        if path.is_file():
            out.append(f"### pipeline/{path.name}\n\n{_text(_summary(path))}")
            continue
        modules = sorted(m for m in path.glob("*.py") if m.name != "__init__.py") or [path / "__init__.py"]
        rows = [(_code(module.name), _text(_summary(module))) for module in modules]
        out.append(f"### pipeline/{name}/\n\n" + _table(("module", "holds"), rows))
    return "\n\n".join(out) + "\n"


def _is_unit(path: Path) -> bool:
    if path.is_dir():
        return (path / "__init__.py").exists()
    return path.suffix == ".py" and path.name not in ("__init__.py", "__main__.py")


# ---------------------------------------------------------------- the hook


def command_records() -> Mapping[str, Any]:
    from pipeline.commands import COMMANDS

    return COMMANDS


def _schema() -> ModuleType:
    from pipeline.core import schema

    return schema


GENERATORS: dict[str, Callable[[], str]] = {
    "commands": lambda: command_reference(command_records()),
    "make-targets": lambda: make_target_reference(make_targets(), command_records()),
    "config": lambda: config_reference(_schema()),
    "choices": lambda: choices_reference(_schema()),
    "code-map": code_map,
}


def render(markdown: str, where: str = "page") -> str:
    """Replace every `<!-- generated: NAME -->` line; an unknown NAME is an error, not an empty section."""

    def generate(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated section {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]().rstrip("\n")

    return MARKER.sub(generate, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:  # MkDocs event
    return render(markdown, page.file.src_path)
