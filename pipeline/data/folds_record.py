"""What produced folds.csv (folds.json): the fold settings, the data.* keys that shape the table, the train table's
sha256; and the check every stage reading folds.csv makes against competition.yaml (`check_folds_current`).

Reads competition.yaml's values and the raw train table; writes nothing (pipeline.data.folds writes folds.json).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.core import paths
from pipeline.core.config import Config, DataConfig, to_dict
from pipeline.core.errors import UserError
from pipeline.data.listing import folders_below, remembered, stat_key
from pipeline.data.tables import list_images

# The data.* keys that decide folds.csv's rows, labels and test listing (the rest only shape the submission).
TABLE_KEYS = ("train_csv", "id_column", "label_column", "label_columns", "task", "label_separator", "classes",
              "train_dir", "image_ext", "test_csv", "test_dir", "submission_id_column")  # fmt: skip


def table_digest(data: DataConfig, raw: Path) -> str | None:
    """sha256 of the train table (the CSV's bytes, or the list of images of a folder-per-class layout)."""
    digest = hashlib.sha256()
    if data.train_csv is not None:
        if not (raw / data.train_csv).is_file():
            return None
        digest.update((raw / data.train_csv).read_bytes())
    else:
        root = raw / data.train_dir
        for file in list_images(root) if root.is_dir() else []:
            digest.update(file.relative_to(root).as_posix().encode() + b"\n")
    return digest.hexdigest()


def remembered_digest(data: DataConfig, out: paths.Paths) -> str | None:
    """table_digest, computed again only when the train table's listing changed (its CSV's, or its folders', mtime
    and size; pipeline.data.listing): every stage start checks it, and a folder of 100,000 images takes seconds to
    list."""
    raw = out.raw
    listing = [raw / data.train_csv] if data.train_csv is not None else folders_below(raw / data.train_dir)
    key = stat_key([*listing, out.raw_stamp])
    name = f"train_table:{data.train_csv or data.train_dir}"
    return remembered(out.checked, name, key, lambda: table_digest(data, raw))


def folds_record(cfg: Config) -> dict[str, Any]:
    """What folds.csv is made from: every setting that changes it, and the train table's digest."""
    values = to_dict(cfg)
    settings: dict[str, Any] = {f"folds.{k}": v for k, v in values["folds"].items()}
    settings.update({f"data.{k}": values["data"][k] for k in TABLE_KEYS})
    settings["sample"] = cfg.sample
    return {"settings": settings, "train_table": remembered_digest(cfg.data, paths.for_config(cfg))}


def describe_change(old: dict[str, Any], new: dict[str, Any], data: DataConfig) -> str:
    """`folds.seed 42 -> 7; the train table (train.csv) changed`: what differs between two records."""
    before = old.get("settings", {})
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in new["settings"].items() if before.get(k) != v]
    if old.get("train_table") != new["train_table"]:
        changed.append(f"the train table ({data.train_csv or data.train_dir}) changed")
    return "; ".join(changed)


def recorded(out: paths.Paths) -> dict[str, Any] | None:
    if not out.folds_record.is_file():
        return None
    try:
        return json.loads(out.folds_record.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: differs from every real record, so folds.csv is rebuilt


def check_folds_current(cfg: Config) -> None:
    """Refuse a folds.csv made under other fold settings or another train table (one `error:` line).

    Called by every stage that reads folds.csv. A folds.csv with no record (a Kaggle bundle) is trusted.
    """
    out = paths.for_config(cfg)
    old = recorded(out)
    if old is None or not out.folds_csv.exists():
        return
    change = describe_change(old, folds_record(cfg), cfg.data)
    if change:
        raise UserError(
            f"{out.folds_csv} was made under other settings ({change}); rebuild it with "
            f"`make folds CONFIG=...` (python -m pipeline folds --config ...), or undo the change"
        )
