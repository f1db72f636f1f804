"""The only module that writes artifacts, always atomically (temp file + os.replace).

Make trusts a file's existence and mtime, so a stage must never leave a half-written file at its final
path: everything is written to a hidden temp file beside it and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

from pipeline.errors import UserError


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` that is a file, not a folder (mkdir's FileExistsError/ENOTDIR)."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def write_error(path: Path, exc: OSError) -> UserError:
    """What to tell the user when the file system refuses to let `path` be written (a user error, not a bug)."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and _blocking_file(path.parent) is not None:
        blocker = _blocking_file(path.parent)
        return UserError(f"cannot create folder {path.parent}: {blocker} is a file, not a folder; move it away")
    if isinstance(exc, IsADirectoryError):
        return UserError(f"cannot write {path}: a folder of that name is in the way; move it away")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return UserError(f"cannot write {path}: permission denied; make {path.parent} writable or set PIPELINE_ROOT")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"cannot write {path}: no space left on the device; free some space and re-run")
    return UserError(f"cannot write {path}: {exc.strerror or exc}; check the folder and re-run")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; publish it with os.replace only if the block succeeds.

    The file system refusing (permission, a file where a folder belongs, no space) is a UserError naming the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        with contextlib.suppress(OSError):
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


def save_figure(path: Path, figure: Figure, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG (the format is explicit: the temp file's suffix is not .png)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} not found; run the stage that writes it first") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON (line {exc.lineno}); delete it and re-run its stage") from exc


def publish(extracted: Path, target: Path) -> None:
    """Move `extracted` to `target` in one rename; an old `target` (only with --force) goes once the new is there."""
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    extracted.rename(target)
    shutil.rmtree(old, ignore_errors=True)
