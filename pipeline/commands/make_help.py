"""`make help`: one line per Make target. A command's line is its record's help (pipeline.commands); a target that
is no command (all, test, refit, ...) keeps its `## ` comment in the Makefile. Runs with the system Python and the
standard library only, so a fresh clone has `make help` before any virtualenv exists.

    python3 pipeline/commands/make_help.py Makefile
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from any folder

from pipeline.commands import COMMANDS  # noqa: E402 - after the path is set

RULE = re.compile(r"^([a-zA-Z_-]+):(?:[^=]|$)(?:.*## (.*))?")


def help_lines(makefile_text: str) -> list[tuple[str, str]]:
    """(target, help) in the Makefile's order, for every target with a `## ` comment or a command record."""
    by_target = {c.target: c.help for c in COMMANDS.values() if c.target}
    lines, seen = [], set()
    for line in makefile_text.splitlines():
        match = RULE.match(line)
        if not match or match.group(1) in seen:
            continue
        target, comment = match.group(1), match.group(2)
        text = by_target.get(target, comment)
        if text:
            lines.append((target, text))
            seen.add(target)
    return lines


def main(paths: list[str]) -> None:
    text = "\n".join(Path(p).read_text() for p in paths)
    lines = help_lines(text)
    width = max(len(target) for target, _ in lines) + 2
    for target, line in lines:
        print(f"{target.ljust(width)}{line}")


if __name__ == "__main__":
    main(sys.argv[1:])
