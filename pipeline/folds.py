"""folds: assign every training row to one of k folds, once per competition.

Reads the competition's train table (competition.yaml's data.*) and image folders; writes
data/processed/<comp>/test.csv (id, image: the test listing in submission order) and then
data/processed/<comp>/folds.csv (id, image, label[, group], fold). Folds belong to the competition,
so every experiment's OOF predictions line up row for row. Same seed -> byte-identical folds.csv.

What produced folds.csv is recorded beside it in folds.json (the fold settings, the data.* keys that shape the
table, and a sha256 of the train table). When competition.yaml or the train table changes, `folds` rebuilds
folds.csv, unless that would change the folds under fold weights already trained on them (it then stops and
names them); every other stage that reads folds.csv refuses a stale one (`check_folds_current`).

Single-label: StratifiedKFold; with folds.group_column: StratifiedGroupKFold; multi-label: iterative
multilabel stratification (iterative-stratification's MultilabelStratifiedKFold).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline import artifacts, paths
from pipeline.cli import config_from_args
from pipeline.config import Config, DataConfig, FoldsConfig, to_dict
from pipeline.data import encode_targets, list_images, read_test_table, read_train_table
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def assign_folds(table: pd.DataFrame, data: DataConfig, folds: FoldsConfig) -> pd.Series:
    """Fold index per row, stratified by label (and grouped when the table has a `group` column)."""
    n = folds.n_folds
    targets = encode_targets(table["label"], data)
    if data.task == "multi_label":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splits = MultilabelStratifiedKFold(n_splits=n, shuffle=True, random_state=folds.seed).split(table, targets)
    else:
        counts = np.bincount(targets, minlength=len(data.classes))
        rare = [data.classes[i] for i, c in enumerate(counts) if 0 < c < n]
        if rare:
            count = int(counts[data.classes.index(rare[0])])
            raise UserError(
                f"class {rare[0]!r} has {count} row{'s' if count != 1 else ''}, fewer than folds.n_folds={n}; "
                "lower folds.n_folds in competition.yaml, or merge or drop the rare class"
            )
        if "group" in table.columns:
            splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=folds.seed)
            splits = splitter.split(table, targets, groups=table["group"])
        else:
            splits = StratifiedKFold(n_splits=n, shuffle=True, random_state=folds.seed).split(table, targets)
    assigned = np.full(len(table), -1, dtype=np.int64)
    for fold, (_, valid_rows) in enumerate(splits):
        assigned[valid_rows] = fold
    return pd.Series(assigned, index=table.index, name="fold")


def stratified_sample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stratified subset of `n` rows (by label), in the original row order."""
    if n >= len(table):
        return table
    strata = table["label"].fillna("")
    frac = n / len(table)
    picked = strata.groupby(strata, group_keys=False).apply(
        lambda s: s.sample(max(1, round(len(s) * frac)), random_state=seed)
    )
    return table.loc[sorted(picked.index[:n] if len(picked) > n else picked.index)]


def build_folds(cfg: Config) -> pd.DataFrame:
    raw = paths.raw_dir(cfg.comp)
    table = read_train_table(cfg.data, cfg.folds, raw)
    if cfg.sample:
        table = stratified_sample(table, cfg.sample, cfg.folds.seed).reset_index(drop=True)
    table["fold"] = assign_folds(table, cfg.data, cfg.folds)
    return table


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


def folds_record(cfg: Config) -> dict[str, Any]:
    """What folds.csv is made from: every setting that changes it, and the train table's digest."""
    values = to_dict(cfg)
    settings: dict[str, Any] = {f"folds.{k}": v for k, v in values["folds"].items()}
    settings.update({f"data.{k}": values["data"][k] for k in TABLE_KEYS})
    settings["sample"] = cfg.sample
    return {"settings": settings, "train_table": table_digest(cfg.data, paths.raw_dir(cfg.comp))}


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


def refuse_if_trained(out: paths.Paths, table: pd.DataFrame, change: str) -> None:
    """New folds that differ from the current folds.csv must not sit under weights trained on the old ones."""
    if not out.folds_csv.exists() or table.to_csv(index=False, lineterminator="\n") == out.folds_csv.read_text():
        return
    trained = out.all_fold_weights()
    if trained:
        names = ", ".join(str(p) for p in trained[:4]) + (f" and {len(trained) - 4} more" if len(trained) > 4 else "")
        raise UserError(
            f"folds.csv would change ({change or 'rebuilt'}), but fold weights trained on the current folds exist: "
            f"{names}; delete them (or their experiment folders) and re-run, or undo the change in competition.yaml"
        )


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    out = paths.for_config(cfg)
    record, old = folds_record(cfg), recorded(out)
    change = describe_change(old, record, cfg.data) if old is not None else "no record of what made it"
    if out.folds_csv.exists() and not args.force:
        if not change:
            log.info("folds: %s is current, skipping (--force to rebuild)", out.folds_csv)
            return
        log.info("folds: rebuilding %s (%s)", out.folds_csv, change)
    test = read_test_table(cfg.data, paths.raw_dir(cfg.comp))
    if cfg.sample:
        test = test.head(cfg.sample)
    table = build_folds(cfg)
    refuse_if_trained(out, table, change)
    artifacts.write_csv(out.test_csv, test)
    artifacts.write_csv(out.folds_csv, table)  # the stage's output
    artifacts.write_json(out.folds_record, record)  # last: a kill before it leaves a record that asks for a rebuild
    sizes = table["fold"].value_counts().sort_index().tolist()
    log.info("folds: %d rows in %d folds %s -> %s", len(table), cfg.folds.n_folds, sizes, out.folds_csv)
