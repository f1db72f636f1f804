"""The only module that writes artifacts, always atomically (temp file + os.replace).

Make trusts a file's existence and mtime, so a stage must never leave a half-written file at its final
path: everything is written to a hidden temp file beside it (`.<name>.<pid>.tmp`) and renamed into place when
complete. Payloads are serialised in memory first and written with ordinary writes, so a full disk or a file-size
limit is an OSError (never a torch/safetensors exception or a SIGBUS from a memory map) and becomes one
`cannot write <file>: no space left on device (need ~N MB)` error; the temp file is removed. Temp files of killed
runs are swept when a stage starts (`sweep_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: what predict.json vouches for, folds.csv in scores.json, a blend's members, a
    pseudo-label / distillation source's identity."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` that is a file, not a folder (mkdir's FileExistsError/ENOTDIR)."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def megabytes(n_bytes: int) -> str:
    return f"~{max(1, round(n_bytes / 2**20))} MB"


def write_error(path: Path, exc: OSError, need_bytes: int | None = None) -> UserError:
    """What to tell the user when the file system refuses to let `path` be written (a user error, not a bug)."""
    need = f" (need {megabytes(need_bytes)})" if need_bytes else ""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and _blocking_file(path.parent) is not None:
        blocker = _blocking_file(path.parent)
        return UserError(f"cannot create folder {path.parent}: {blocker} is a file, not a folder; move it away")
    if isinstance(exc, IsADirectoryError):
        return UserError(f"cannot write {path}: a folder of that name is in the way; move it away")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return UserError(f"cannot write {path}: permission denied; make {path.parent} writable or set PIPELINE_ROOT")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(
            f"cannot write {path}: no space left on device{need}; free some space (or set PIPELINE_ROOT to a bigger "
            "disk) and re-run"
        )
    if exc.errno == errno.EFBIG:
        return UserError(
            f"cannot write {path}: file too large for the file-size limit (ulimit -f) or the file system{need}; "
            "raise the limit and re-run"
        )
    return UserError(f"cannot write {path}: {exc.strerror or exc}; check the folder and re-run")


@contextlib.contextmanager
def atomic_path(path: Path, need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; publish it with os.replace only if the block succeeds.

    The file system refusing (permission, a file where a folder belongs, no space) is a UserError naming the path
    (and `need_bytes`, the size being written, when known).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, need_bytes) from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc, need_bytes) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folders: list[Path]) -> list[Path]:
    """Delete `.<name>.<pid>.tmp` files (under `folders`) whose writer is no longer running: a killed run's leftovers.

    A temp file of a process that is still alive (a concurrent stage) is left alone.
    """
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for tmp in folder.rglob(".*.tmp"):
            match = TEMP_NAME.match(tmp.name)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    if removed:
        log.info("removed %d temp file(s) left by killed runs (e.g. %s)", len(removed), removed[0])
    return removed


def write_bytes(path: Path, data: bytes) -> Path:
    """The one place bytes reach an artifact's disk: ordinary writes, so failures are OSErrors with an errno."""
    with atomic_path(path, len(data)) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # a full disk can surface only here on some file systems
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


CSV_CHUNK_ROWS = 2_000  # rows formatted at a time (pandas holds ~1 kB a row while it formats them)


def write_csv(path: Path, frame: pd.DataFrame, float_format: str | None = None) -> Path:
    """`frame` as CSV (no index, \\n line ends), formatted and written CSV_CHUNK_ROWS rows at a time into the temp
    file, published whole."""

    def chunk(start: int) -> str:
        rows = frame.iloc[start : start + CSV_CHUNK_ROWS]  # pandas' own chunksize still peaks at twice the text
        return rows.to_csv(index=False, header=start == 0, float_format=float_format, lineterminator="\n")

    starts = range(0, max(len(frame), 1), CSV_CHUNK_ROWS)
    first = chunk(0)
    last = chunk(starts[-1]) if len(starts) > 1 else first  # formatted once: written last below
    estimate = (len(first.encode()) + len(last.encode())) * len(starts) // 2  # for a full disk's message
    with atomic_path(path, estimate) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(first)
            for start in starts[1:-1]:
                handle.write(chunk(start))
            if len(starts) > 1:
                handle.write(last)
            handle.flush()
            os.fsync(handle.fileno())  # a full disk can surface only here on some file systems
    return path


def save_torch(path: Path, payload: Any) -> Path:
    import torch

    buffer = io.BytesIO()  # torch.save to a file turns a full disk into a RuntimeError with no errno
    torch.save(payload, buffer)
    return write_bytes(path, buffer.getvalue())


def save_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    # save_file reports a full disk as a SafetensorError; serialising to bytes keeps it an OSError
    return write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


def save_figure(path: Path, figure: Figure, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return write_bytes(path, buffer.getvalue())


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
