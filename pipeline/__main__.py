"""`python -m pipeline <command> --config configs/<comp>/<exp>.yaml [--fold K] [--set k=v ...]`: the command layer's
main (pipeline.commands.cli), under the one error contract."""

from __future__ import annotations

import sys

from pipeline.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
