"""Without a sample submission, test ids follow one rule in every layout: written as the train ids are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.config import DataConfig
from pipeline.data.tables import read_test_table


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DataConfig(train_csv="train.csv", image_ext=".png", test_csv=None), ["a1", "b2"]),  # bare train ids
        (DataConfig(train_csv="train.csv", image_ext="", test_csv=None), ["a1.png", "b2.png"]),  # ids carry it
        (DataConfig(train_csv=None, label_column=None, image_ext="", test_csv=None), ["a1.png", "b2.png"]),  # folders
    ],
)
def test_test_ids_are_written_as_train_ids_are(tmp_path: Path, data: DataConfig, expected: list[str]) -> None:
    for name in ("a1", "b2"):
        _png(tmp_path / "test" / f"{name}.png")
    table = read_test_table(data, tmp_path)
    assert list(table["id"]) == expected
    assert list(table["image"]) == ["test/a1.png", "test/b2.png"]
