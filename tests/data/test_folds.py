"""Folds: stratified, disjoint, covering every row, deterministic; grouped and multi-label variants."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.builders import run_cli, write_competition
from pipeline.core.config import DataConfig, FoldsConfig
from pipeline.core.errors import UserError
from pipeline.data.folds import assign_folds


def table(labels: list[str], groups: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"id": [f"i{k}" for k in range(len(labels))], "label": labels})
    if groups is not None:
        frame["group"] = groups
    return frame


def test_stratified_disjoint_covering_deterministic() -> None:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    data = DataConfig(classes=["a", "b", "c"])
    folds = assign_folds(table(labels), data, FoldsConfig(n_folds=5, seed=1))
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]  # every row assigned to exactly one fold
    per_fold = pd.crosstab(folds, pd.Series(labels))
    assert (per_fold["a"] == 10).all() and (per_fold["b"] == 6).all() and (per_fold["c"] == 4).all()
    assert folds.equals(assign_folds(table(labels), data, FoldsConfig(n_folds=5, seed=1)))
    assert not folds.equals(assign_folds(table(labels), data, FoldsConfig(n_folds=5, seed=2)))


def test_groups_never_straddle_folds() -> None:
    labels = ["a", "b"] * 30
    groups = [f"patient{k // 3}" for k in range(60)]
    folds = assign_folds(table(labels, groups), DataConfig(classes=["a", "b"]), FoldsConfig(n_folds=4, seed=0))
    assert (pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique() == 1).all()


def test_multilabel_iterative_stratification() -> None:
    labels = ["x y" if k % 3 == 0 else ("x" if k % 2 else "y") for k in range(60)]
    data = DataConfig(classes=["x", "y"], task="multi_label", label_column="tags")
    folds = assign_folds(table(labels), data, FoldsConfig(n_folds=3, seed=0))
    counts = pd.crosstab(folds, pd.Series(labels))
    assert (counts.max() - counts.min() <= 1).all()  # each label combination spread evenly


def test_class_smaller_than_n_folds_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="class 'b' has 2 rows, fewer than folds.n_folds=5"):
        assign_folds(table(["a"] * 20 + ["b"] * 2), DataConfig(classes=["a", "b"]), FoldsConfig(n_folds=5))


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_cli_folds_byte_identical_and_skips(competition, project: Path) -> None:
    competition("folder_per_class")
    assert run_cli("init", "--comp", "toy", cwd=project).returncode in (0, 2)
    config = project / "configs/toy/competition.yaml"
    if not config.exists():  # init needs weights for baseline.yaml; competition.yaml alone is enough here
        pytest.skip("init could not prepare offline weights")
    first = run_cli("folds", "--config", str(config), cwd=project)
    assert first.returncode == 0, first.stderr
    out = project / "data/processed/toy/folds.csv"
    content = out.read_bytes()
    assert list(pd.read_csv(out).columns) == ["id", "image", "label", "fold"]
    out.unlink()
    assert run_cli("folds", "--config", str(config), cwd=project).returncode == 0
    assert out.read_bytes() == content  # same seed -> byte-identical
    mtime = out.stat().st_mtime_ns
    skip = run_cli("folds", "--config", str(config), cwd=project)
    assert "skipping" in skip.stderr and out.stat().st_mtime_ns == mtime


def test_layouts_write_normal_form(tmp_path: Path) -> None:
    from pipeline.data.layout import infer_data
    from pipeline.data.tables import read_train_table

    raw = write_competition(tmp_path / "c", "onehot_multi")
    data, _, _ = infer_data(raw)
    frame = read_train_table(data, FoldsConfig(), raw)
    assert list(frame.columns) == ["id", "image", "label"]
    assert frame.loc[0, "label"] == "cat fox"  # row 0 has cat and the extra fox
    assert all((raw / p).is_file() for p in frame["image"])
