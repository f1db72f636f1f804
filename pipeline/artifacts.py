"""The only module that writes artifacts, always atomically (temp file + os.replace).

Make trusts a file's existence and mtime, so a stage must never leave a half-written file at its final
path: everything is written to a hidden temp file beside it and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from pipeline.errors import UserError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; publish it with os.replace only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise UserError(f"cannot create folder {path.parent}: permission denied; choose a writable location") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except PermissionError as exc:
        raise UserError(f"cannot write {path}: permission denied; make the folder writable") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame, float_format: str | None = None) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")
    return path


def save_torch(path: Path, payload: Any) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def save_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} not found; run the stage that writes it first") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON (line {exc.lineno}); delete it and re-run its stage") from exc
