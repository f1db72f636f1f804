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
import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline.core import artifacts, paths
from pipeline.core.cli import config_from_args
from pipeline.core.config import Config, DataConfig, FoldsConfig
from pipeline.core.errors import UserError
from pipeline.data.folds_record import describe_change, folds_record, recorded
from pipeline.data.tables import encode_targets, read_test_table, read_train_table

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
