"""What was already checked about the competition's image listing, so a stage start costs no per-image stat or hash
when nothing changed.

Checking 100,000 images (a stat each for the image cache, a recursive listing for a folder-per-class train table)
at every stage start costs seconds each time. Instead a check's result is remembered beside a key made of the
listing's own (mtime_ns, size): the table files (folds.csv, test.csv, a train CSV), the folders the images live in
(a folder's mtime changes when a file is added, removed or renamed in it) and the raw folder's .complete stamp (a
new download). While the key is unchanged the remembered result is reused; any change re-runs the full check.
A file rewritten in place under the same name is not seen: raw data is immutable here (re-download it, which
renews the stamp, or run the stage with --force).

Reads stat() of the key's files and folders; writes data/processed/<comp>/checked.json (paths.Paths.checked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.core import artifacts

Key = list[list[Any]]


def stat_key(paths: Iterable[Path]) -> Key:
    """[path, mtime_ns, size] per path (a missing one as -1, -1): the listing's identity, read without opening."""
    key = []
    for path in sorted({str(p) for p in paths}):
        try:
            st = os.stat(path)
            key.append([path, st.st_mtime_ns, st.st_size])
        except OSError:
            key.append([path, -1, -1])
    return key


def folders_below(root: Path) -> list[Path]:
    """`root` and every folder under it, found from directory entries' types alone (no stat per file)."""
    found, todo = [], [root]
    while todo:
        folder = todo.pop()
        found.append(folder)
        try:
            with os.scandir(folder) as entries:
                todo.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return found


def image_folders(root: Path, images: Iterable[str]) -> list[Path]:
    """The folders (under `root`) that hold the listed images: a handful for a CSV layout, one per class else."""
    return [root / parent for parent in sorted({os.path.dirname(image) for image in images})]


def _read(record: Path) -> dict[str, Any]:
    try:
        values = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def remembered(record: Path, name: str, key: Key, check: Callable[[], Any]) -> Any:
    """`check()`'s result, reused from `record` when the check `name` last ran under the same `key`; else run
    now and remembered (only a result that is not None: a failed or negative check is re-run next time)."""
    values = _read(record)
    entry = values.get(name)
    if isinstance(entry, dict) and entry.get("key") == key:
        return entry.get("value")
    value = check()
    if value is not None:
        values = _read(record)  # another stage may have remembered something meanwhile
        values[name] = {"key": key, "value": value}
        artifacts.write_json(record, values)
    return value
