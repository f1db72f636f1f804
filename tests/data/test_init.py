"""init infers every supported competition layout; where it can't decide it names the key to set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.builders import LAYOUTS, run_cli, write_competition
from pipeline.core.errors import UserError
from pipeline.data.layout import infer_data

# layout -> (train_csv, id_column, label_column, label_columns?, task, image_ext, train_dir, test_dir, format, metric)
EXPECTED = {
    "csv": ("train.csv", "id", "label", False, "single_label", ".png", "train", "test", "label", "accuracy"),
    "csv_ids_with_ext": (
        "train.csv",
        "image_id",
        "label",
        False,
        "single_label",
        "",
        "train_images",
        "test_images",
        "label",
        "accuracy",
    ),  # fmt: skip
    "folder_per_class": (None, "id", None, False, "single_label", "", "train", "test", "label", "accuracy"),
    "multilabel_text": (
        "train_v2.csv",
        "image_name",
        "tags",
        False,
        "multi_label",
        ".jpg",
        "train-jpg",
        "test-jpg",
        "labels",
        "f1_micro",
    ),  # fmt: skip
    "onehot_single": (
        "train.csv",
        "image_id",
        None,
        True,
        "single_label",
        ".jpg",
        "images",
        "images",
        "probabilities",
        "roc_auc",
    ),  # fmt: skip
    "onehot_multi": (
        "train.csv",
        "image_id",
        None,
        True,
        "multi_label",
        ".jpg",
        "images",
        "images",
        "probabilities",
        "roc_auc",
    ),  # fmt: skip
    "probabilities": (
        "labels.csv",
        "id",
        "breed",
        False,
        "single_label",
        ".jpg",
        "train",
        "test",
        "probabilities",
        "log_loss",
    ),  # fmt: skip
    "ordinal": (
        "train.csv",
        "id_code",
        "diagnosis",
        False,
        "ordinal",
        ".png",
        "train_images",
        "test_images",
        "numeric",
        "quadratic_weighted_kappa",
    ),  # fmt: skip
    "no_sample": ("train.csv", "id", "label", False, "single_label", ".png", "train", "test", "label", "accuracy"),
}


def test_every_layout_has_an_expectation() -> None:
    assert set(EXPECTED) == set(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_infers_layout(tmp_path: Path, layout: str) -> None:
    raw = write_competition(tmp_path / layout, layout)
    data, metric, notes = infer_data(raw)
    train_csv, id_col, label_col, onehot, task, ext, train_dir, test_dir, fmt, expected_metric = EXPECTED[layout]
    assert data.train_csv == train_csv
    if train_csv:
        assert data.id_column == id_col
    assert data.label_column == label_col
    assert bool(data.label_columns) == onehot
    assert data.task == task
    assert data.image_ext == ext
    assert (data.train_dir, data.test_dir) == (train_dir, test_dir)
    assert data.submission_format == fmt
    assert metric == expected_metric
    assert sorted(data.classes) == (["0", "1", "2"] if layout == "ordinal" else ["cat", "dog", "fox"])
    assert data.test_csv == (None if layout == "no_sample" else "sample_submission.csv")
    assert notes and any("classes: 3" in n for n in notes)


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_init_cli_writes_loadable_configs_and_keeps_them(competition, project: Path) -> None:
    competition("probabilities")
    result = run_cli("init", "--comp", "toy", cwd=project, env={"PIPELINE_WEIGHTS_DIR": str(project / "w")})
    # offline and no local weights: init prepares the Lite0 file from the installed package, or names the key
    if result.returncode == 2:
        assert "model.pretrained" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert "submission: probabilities" in result.stdout
    competition_yaml = yaml.safe_load((project / "configs/toy/competition.yaml").read_text())
    assert competition_yaml["data"]["submission_format"] == "probabilities"
    baseline = yaml.safe_load((project / "configs/toy/baseline.yaml").read_text())
    assert Path(project / baseline["model"]["pretrained"]).is_file()
    mtime = (project / "configs/toy/baseline.yaml").stat().st_mtime_ns
    again = run_cli("init", "--comp", "toy", cwd=project)
    assert again.returncode == 0 and (project / "configs/toy/baseline.yaml").stat().st_mtime_ns == mtime


def test_undecidable_label_column_names_the_key(tmp_path: Path) -> None:
    raw = write_competition(tmp_path / "x", "csv")
    table = (raw / "train.csv").read_text().splitlines()
    header = "id,kind,notes,source"  # three candidate columns, none named like a label
    (raw / "train.csv").write_text("\n".join([header] + [r + ",a,b" for r in table[1:]]) + "\n")
    with pytest.raises(UserError, match="data.label_column"):
        infer_data(raw)


def test_missing_raw_folder_says_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="make download COMP=nothing"):
        infer_data(tmp_path / "nothing")


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_init_without_sample_submission_keeps_test_csv_null(competition, project: Path) -> None:
    """No sample_submission.csv: competition.yaml must say `test_csv: null`, not fall back to the default file."""
    competition("no_sample")
    result = run_cli("init", "--comp", "toy", cwd=project, env={"PIPELINE_WEIGHTS_DIR": str(project / "w")})
    written = yaml.safe_load((project / "configs/toy/competition.yaml").read_text())
    assert "test_csv" in written["data"] and written["data"]["test_csv"] is None, result.stderr


def test_zip_unzipped_with_a_top_level_folder(tmp_path: Path) -> None:
    """data/raw/<slug>/<slug>/train.csv (a zip holding one folder): read from that folder, not as class folders."""
    write_competition(tmp_path / "comp" / "comp", "csv")
    data, _, _ = infer_data(tmp_path / "comp")
    assert (data.train_csv, data.train_dir, data.test_dir) == ("comp/train.csv", "comp/train", "comp/test")
    assert data.test_csv == "comp/sample_submission.csv" and sorted(data.classes) == ["cat", "dog", "fox"]


def test_sample_submission_with_the_id_column_last(tmp_path: Path) -> None:
    """sample_submission.csv as `label,id`: the id column is found by name, the label is the submission column."""
    raw = write_competition(tmp_path / "x", "csv")
    sample = (raw / "sample_submission.csv").read_text().splitlines()
    swapped = [",".join(reversed(row.split(","))) for row in sample]
    (raw / "sample_submission.csv").write_text("\n".join(swapped) + "\n")
    data, _, _ = infer_data(raw)
    assert (data.submission_id_column, data.submission_columns, data.test_dir) == ("id", ["label"], "test")
