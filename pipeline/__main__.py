"""Command line: `python -m pipeline <stage> --config configs/<comp>/<exp>.yaml [--fold K] [--set k=v ...]`.

The command table, parser and error contract live in pipeline.core.cli (one contract for the CLI and the Kernel).
"""

from __future__ import annotations

import sys

from pipeline.core.cli import COMMANDS, build_parser, main, one_line, split_overrides  # noqa: F401 - the CLI's surface

if __name__ == "__main__":
    sys.exit(main())
