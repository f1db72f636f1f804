"""What the data path needs to know of a timm backbone by name, without building it: that the name exists (with a
did-you-mean), so `make cache` and training fail on a typo before any decoding.
"""

from __future__ import annotations

import difflib

import timm

from pipeline.core.errors import UserError


def check_model_name(name: str) -> None:
    if name in timm.list_models() or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise UserError(f"model.name: unknown timm model {name!r}{hint}")
