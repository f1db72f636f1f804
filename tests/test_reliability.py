"""Reliability, second battery (issue 17): odd but valid inputs work, and things that break say so in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import run_main, tiny_experiment
from test_chain import run_chain, write_competition_yaml

ODD_IDS = ["NA", "null", "None", "nan", "NaN", "-nan"]


def rename_ids(raw: Path, csv: str, folder: str, new_ids: list[str], column: str = "id") -> None:
    """Give the first rows of `csv` the ids `new_ids`, renaming their images to match."""
    frame = pd.read_csv(raw / csv, dtype=str, keep_default_na=False)
    for row, new in enumerate(new_ids):
        old = frame.loc[row, column]
        (raw / folder / f"{old}.png").rename(raw / folder / f"{new}.png")
        frame.loc[row, column] = new
    frame.to_csv(raw / csv, index=False)


def test_ids_pandas_reads_as_missing_and_a_blank_target_make_a_correct_submission(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, "csv")
    raw = project / "data/raw/toy"
    rename_ids(raw, "train.csv", "train", ODD_IDS)
    rename_ids(raw, "sample_submission.csv", "test", ODD_IDS)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str, keep_default_na=False)
    sample["label"] = ""  # a blank target column, as some competitions ship it
    sample.to_csv(raw / "sample_submission.csv", index=False)
    run_chain(capsys, tiny_experiment(project))
    submission = pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str, keep_default_na=False)
    assert list(submission["id"]) == list(sample["id"])
    assert set(submission["label"]) <= {"cat", "dog", "fox"} and submission["label"].str.len().min() > 0
    oof = pd.read_csv(project / "data/runs/toy/tiny/oof.csv", dtype=str, keep_default_na=False)
    assert set(ODD_IDS) <= set(oof["id"])


# Readers of files the pipeline itself writes with numbers only (training logs), where NA parsing cannot bite.
OWN_NUMERIC_TABLES = {"report.py": 1, "fashion.py": 1}


def test_every_competition_csv_goes_through_the_one_reader() -> None:
    """pandas' default NA parsing turns ids like NA or null into missing values: only data.read_csv reads CSVs."""
    package = Path(__file__).resolve().parents[1] / "pipeline"
    found = {}
    for module in sorted(package.rglob("*.py")):
        if module.name == "data.py":
            continue
        count = module.read_text().count("pd.read_csv(") + module.read_text().count("pandas.read_csv(")
        if count:
            found[module.name] = count
    assert found == OWN_NUMERIC_TABLES, f"read CSVs with pipeline.data.read_csv / read_typed_csv: {found}"


def test_submit_validates_odd_ids_and_a_blank_target_column(tmp_path: Path) -> None:
    from pipeline.submit import read_table
    from pipeline.validate import check_submission

    sample, submission = tmp_path / "sample_submission.csv", tmp_path / "sub.csv"
    sample.write_text("id,label\nNA,\nnull,\n007,\n")
    submission.write_text("id,label\nNA,cat\nnull,dog\n007,cat\n")
    check_submission(read_table(submission, "x"), read_table(sample, "x"), str(submission))
    frame = read_table(submission, "x")
    assert list(frame["id"]) == ["NA", "null", "007"]


# --- folds.csv follows competition.yaml ----------------------------------------------------------------------------


def edit_competition(project: Path, section: str, **values: object) -> None:
    import yaml

    path = project / "configs/toy/competition.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))


def test_folds_rebuild_when_their_settings_change_and_no_weights_exist(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    folds_csv = project / "data/processed/toy/folds.csv"
    before = folds_csv.read_text()
    edit_competition(project, "folds", n_folds=3)
    result = run_main(capsys, "folds", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "folds.n_folds 2 -> 3" in result.stderr
    after = pd.read_csv(folds_csv)
    assert folds_csv.read_text() != before and sorted(after["fold"].unique()) == [0, 1, 2]
    again = run_main(capsys, "folds", "--config", str(config))
    assert again.returncode == 0 and "is current, skipping" in again.stderr
