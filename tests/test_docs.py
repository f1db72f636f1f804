"""The docs: the MkDocs site builds with --strict, its generated reference pages cover every command, Make target
and config key, README's target table agrees with the Makefile and the command records, and every code path the
docs name exists."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands import COMMANDS
from pipeline.core import schema

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner is not a docs warning
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(project / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# ---------------------------------------------------------------- the site


def test_site_builds_strict_with_every_command_and_key(tmp_path: Path) -> None:
    done = _build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    commands_html = (tmp_path / "site" / "commands" / "index.html").read_text()
    for name in COMMANDS:
        assert f'id="{name}"' in commands_html, f"command {name} has no section in the built command reference"
    config_html = (tmp_path / "site" / "config-reference" / "index.html").read_text()
    for key, _, _ in hooks.config_keys(schema):
        assert f"<code>{key}</code>" in config_html, f"config key {key} missing from the built config reference"
    assert "<!-- generated:" not in commands_html + config_html  # every marker was replaced


@pytest.mark.slow  # a second site build (~3 s) that guards mkdocs.yml's strictness; the build above is in test-fast
def test_strict_build_fails_on_a_broken_link_and_a_page_missing_from_nav(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copy(ROOT / "Makefile", project / "Makefile")  # the make-targets section reads it
    (project / "pipeline").symlink_to(ROOT / "pipeline")  # and the code map the package
    with (project / "docs" / "index.md").open("a") as page:
        page.write("\n[gone](no-such-page.md) and [no anchor](kaggle.md#no-such-section)\n")
    (project / "docs" / "orphan.md").write_text("# Not in the nav\n")
    done = _build(project, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no-such-page.md" in output and "no-such-section" in output and "orphan.md" in output


def test_readme_links_into_docs_resolve() -> None:
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README.read_text())
    assert len(links) >= 10
    for target, anchor in links:
        page = ROOT / target
        assert page.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            text = page.read_text()
            headings = [_slug(h) for h in re.findall(r"^#+ (.*?)(?: \{ #[\w-]+ \})?$", text, re.M)]
            assert anchor in headings or f"{{ #{anchor} }}" in text, (
                f"README links to {target}#{anchor}: no such heading"
            )


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what MkDocs and GitHub both produce for plain headings)."""
    text = re.sub(r"[^\w\s-]", "", heading.lower())
    return re.sub(r"[\s]+", "-", text.strip())


# ---------------------------------------------------------------- generated reference pages


@dataclasses.dataclass(frozen=True)
class FakeCommand:
    """The shape of a pipeline.commands record."""

    name: str
    module: str
    help: str
    flags: tuple[tuple[str, dict], ...] = ()
    reads_folds: bool = True
    accepts_refit: bool = False
    make_target: str | None = None


FAKES = {
    "train": FakeCommand("train", "pipeline.training.train", "fine-tune <comp>'s folds", make_target="train",
                         accepts_refit=True, flags=(("--seed", {"type": int, "default": None, "help": "one seed"}),)),
    "weights": FakeCommand("weights", "pipeline.training.weights", "prepare a | b weights", reads_folds=False),
    "report": FakeCommand("report", "pipeline.reporting.report", "html", make_target="",  # "": its own name
                          flags=(("--tta", {"nargs": "?", "const": "configured", "default": None, "help": "views"}),)),
}  # fmt: skip


def test_command_reference_shows_each_record() -> None:
    text = hooks.command_reference(FAKES)
    sections = dict(re.findall(r"^### (\S+)\n(.*?)(?=^### |\Z)", text, re.M | re.S))
    assert list(sections) == ["train", "weights", "report"]
    assert "`make train`" in sections["train"] and "--fold refit" in sections["train"]
    assert "`--seed`" in sections["train"] and "one seed" in sections["train"]
    assert "&lt;comp&gt;" in sections["train"]  # not swallowed as an HTML tag
    assert "CLI only" in sections["weights"] and "Does not read folds.csv" in sections["weights"]
    assert r"a \| b" in sections["weights"]  # a pipe in help text does not split the table row
    assert "--fold refit" not in sections["weights"]
    assert "alone: `configured`" in sections["report"] and "`make report`" in sections["report"]


def test_make_target_reference_links_the_command_behind_a_target() -> None:
    text = hooks.make_target_reference({"train": "fit", "lint": "ruff"}, FAKES)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `make ([\w-]+)` .*$", text, re.M)}
    assert set(rows) == {"train", "lint"}
    assert "[`train`](#train)" in rows["train"] and "](#" not in rows["lint"]


def test_generated_command_reference_covers_every_record_and_make_target() -> None:
    commands = hooks.render("<!-- generated: commands -->")
    for name, command in COMMANDS.items():
        assert f"### {name}\n" in commands
        if hooks.make_target_of(command):
            assert f"`make {hooks.make_target_of(command)}`" in commands
    targets = hooks.render("<!-- generated: make-targets -->")
    for target in hooks.make_targets():
        assert f"`make {target}`" in targets


def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every leaf key of a config section, walked independently of the generator."""
    keys = []
    for f in dataclasses.fields(cls):
        key = prefix + f.metadata.get("key", f.name)
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        nested = factory() if factory is not None else None
        keys += _schema_keys(type(nested), key + ".") if dataclasses.is_dataclass(nested) else [key]
    return keys


def test_config_reference_covers_every_key_with_default_range_and_comment() -> None:
    text = hooks.render("<!-- generated: config -->")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w.]+)` \|.*$", text, re.M)}
    expected = [k for k in _schema_keys(schema.Config) if k.split(".")[0] in schema.COMPETITION_KEYS
                or k.split(".")[0] in schema.EXPERIMENT_KEYS]  # fmt: skip
    assert expected and set(expected) <= set(rows), sorted(set(expected) - set(rows))
    assert "`train.pseudo.from`" in text and "`train.pseudo.from_`" not in text  # the YAML key, not the field
    assert "at least 2" in rows["folds.n_folds"] and "`5`" in rows["folds.n_folds"]
    assert "lr-find" in rows["train.lr"]  # a trailing comment on a field's last line
    assert "seed bag" in rows["train.seeds"].lower()  # comment lines above a field without its own
    assert '`" "`' in rows["data.label_separator"]  # a blank default stays visible


def test_choices_reference_lists_the_schema_name_tuples() -> None:
    text = hooks.render("<!-- generated: choices -->")
    for name, values in vars(schema).items():
        if isinstance(values, tuple) and values and all(isinstance(v, str) for v in values) and name.isupper():
            assert f"`{name}`" in text and all(f"`{v}`" in text for v in values)


def test_code_map_lists_every_module() -> None:
    text = hooks.render("<!-- generated: code-map -->")
    sections = dict(re.findall(r"^### pipeline/(\S+)\n(.*?)(?=^### |\Z)", text, re.M | re.S))
    for package in (ROOT / "pipeline").iterdir():
        if package.is_dir() and (package / "__init__.py").exists():
            modules = [m.name for m in package.glob("*.py") if m.name != "__init__.py"] or ["__init__.py"]
            assert all(f"`{m}`" in sections[package.name + "/"] for m in modules), package
        elif package.suffix == ".py" and package.name not in ("__init__.py", "__main__.py"):
            assert package.name in sections, package


def test_unknown_generated_section_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown generated section 'comands'"):
        hooks.render("<!-- generated: comands -->", "x.md")


# ---------------------------------------------------------------- README


def _readme_targets() -> list[str]:
    text = README.read_text()
    table = re.search(r"^\| make target \| what it does \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    assert table, "README has no `| make target | what it does |` table"
    return re.findall(r"^\| `make ([\w-]+)`", table.group(1), re.M)


def test_readme_target_table_lists_real_make_targets() -> None:
    targets = _readme_targets()
    assert len(targets) >= 10
    unknown = sorted(set(targets) - set(hooks.make_targets()))
    assert not unknown, f"README's target table names targets the Makefile lacks: {unknown}"


def test_every_command_with_a_make_target_is_documented() -> None:
    listed = set(_readme_targets()) | set(re.findall(r"`make ([\w-]+)`", hooks.render("<!-- generated: commands -->")))
    targets = [hooks.make_target_of(c) for c in COMMANDS.values()]
    missing = sorted(t for t in targets if t and t not in listed)
    assert not missing, f"commands with a make target in neither README's table nor the command reference: {missing}"


def test_readme_fits_on_a_few_screens() -> None:
    # 300 lines of text plus the three measured tables the scale, imbalance and speed issues asked README to show
    assert len(README.read_text().splitlines()) <= 330


# ---------------------------------------------------------------- paths named in the docs


PATH = re.compile(r"(?<![\w./-])((?:pipeline|tests|notebooks)/[\w./-]*[\w/])")
MODULE = re.compile(r"(?<![\w./-])(pipeline(?:\.\w+)+)")


def _module_or_attribute_exists(dotted: str) -> bool:
    """`pipeline.a.b` is a module, or `b` is defined at the top of module `pipeline.a` (a function, class or name; a
    package's lazily imported name is listed as a string)."""
    as_path = ROOT / dotted.replace(".", "/")
    if as_path.with_suffix(".py").is_file() or (as_path / "__init__.py").is_file():
        return True
    parent = as_path.parent.with_suffix(".py")
    if not parent.is_file():
        parent = as_path.parent / "__init__.py"
    name = as_path.name
    return parent.is_file() and re.search(rf'^(def |class )?{name}\b|"{name}"', parent.read_text(), re.M) is not None


def _named_missing(text: str) -> list[str]:
    missing = [p for p in PATH.findall(text) if "<" not in p and not (ROOT / p.rstrip(".")).exists()]
    return missing + [m for m in MODULE.findall(text) if not _module_or_attribute_exists(m.rstrip("."))]


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: p.name)
def test_code_paths_named_in_the_docs_exist(page: Path) -> None:
    missing = _named_missing(page.read_text())
    assert not missing, f"{page.name} names paths or modules that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("section", sorted(hooks.GENERATORS))
def test_code_paths_named_in_generated_sections_exist(section: str) -> None:
    """The generated pages quote the code's own comments and help texts: a module they name must exist too."""
    missing = _named_missing(hooks.render(f"<!-- generated: {section} -->"))
    assert not missing, f"generated section {section} names paths or modules that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: p.name)
def test_placeholders_are_code_not_html(page: Path) -> None:
    """`<comp>` outside a code span is raw HTML to Markdown: the browser drops it and the path reads `data/raw//`."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # fenced blocks
    text = re.sub(r"^    .*$", "", text, flags=re.M)  # indented code blocks
    text = re.sub(r"`[^`]*`", "", text)  # code spans, also across lines
    tags = re.findall(r"<[A-Za-z][^<>\n]*>", text)
    assert not tags, f"{page.name}: wrap these in backticks: {tags}"
