"""The submission stage writes sample_submission's column order, also when its id column is not first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.builders import run_main, tiny_experiment, write_competition_config
from pipeline.core import paths
from pipeline.core.config import load_config


def test_submission_follows_a_sample_with_the_id_column_last(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_config(project)
    sample_path = project / "data/raw/toy/sample_submission.csv"
    sample = pd.read_csv(sample_path, dtype=str)
    sample[["label", "id"]].to_csv(sample_path, index=False)  # label first, id last
    config = tiny_experiment(project)
    out = paths.for_config(load_config(config))
    out.test_blend.parent.mkdir(parents=True, exist_ok=True)
    probs = pd.DataFrame({"id": sample["id"], "cat": 0.1, "dog": 0.8, "fox": 0.1})
    probs.to_csv(out.test_blend, index=False)
    result = run_main(capsys, "submission", "--config", str(config))
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(out.submission, dtype=str)
    assert list(written.columns) == ["label", "id"]
    assert written["id"].tolist() == sample["id"].tolist() and set(written["label"]) == {"dog"}
