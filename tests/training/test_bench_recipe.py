"""bench-recipe's pieces: the starter reference loop and the offline datasets it materialises (tiny, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from helpers.builders import TINY_MODEL
from pipeline.benchmarks import recipe_bench, starter


def test_starter_trains_from_a_weights_file_and_predicts_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_file(timm.create_model(TINY_MODEL, num_classes=1000).state_dict(), str(weights))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (20, 20), dtype=np.uint8) for _ in range(24)]
    labels = np.arange(24) % 3
    result = starter.train_starter(images[:16], labels[:16], images[16:], 3, str(weights), epochs=2, image_size=32,
                                   batch_size=8, model_name=TINY_MODEL)  # fmt: skip
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    assert result.probs.shape == (8, 3) and np.allclose(result.probs.sum(axis=1), 1, atol=1e-5)


def test_starter_augmentation_flips_and_jitters_only_mildly() -> None:
    batch = np.random.default_rng(0).normal(size=(64, 3, 8, 8)).astype(np.float32)
    out = starter.augment(batch, np.random.default_rng(1))
    flipped = [np.allclose(out[i] / out[i].std(), batch[i][..., ::-1] / batch[i].std(), atol=0.3) for i in range(64)]
    assert 10 < sum(flipped) < 54  # about half the images are mirrored
    assert np.abs(out.std() / batch.std() - 1) < 0.15  # mild contrast change


@pytest.mark.parametrize("dataset", ["digits"])
def test_bench_dataset_is_a_kaggle_layout_competition(project: Path, dataset: str) -> None:
    comp = recipe_bench.materialise(dataset, n_train=40, n_test=20)
    raw = project / "data/raw" / comp
    train, solution = pd.read_csv(raw / "train.csv"), pd.read_csv(raw / "solution.csv")
    assert len(train) == 40 and len(solution) == 20 and (raw / "sample_submission.csv").exists()
    assert all((raw / "train" / f"{i}.png").exists() for i in train["id"])
    assert set(train["id"]).isdisjoint(solution["id"]) and train["label"].nunique() == 10
    assert recipe_bench.materialise(dataset, n_train=40, n_test=20) == comp  # reused, not rebuilt


def test_bench_table_leaves_what_a_row_lacks_blank() -> None:
    """The 5-fold row has no epoch-1 loss or TTA column of its own: blank cells, not 'nan'."""
    rows = [{"dataset": "fashion", "epochs": 3, "variant": "default_5fold", "holdout": 0.885, "vs_reference": 0.0655}]
    line = recipe_bench.table(rows).splitlines()[-1]
    assert "nan" not in line
    assert line == "| fashion | 3 | default, 5 folds + TTA | 0.8850 |  | +0.0655 |  |  |"


def test_techniques_point_their_sources_at_the_baseline_arm_of_the_same_epochs() -> None:
    from pipeline.benchmarks import techniques

    change = techniques.source(techniques.ARMS["pseudo"][1], epochs=5)
    assert change["train"]["pseudo"] == {"from": "tech_baseline_e5", "threshold": 0.9}
    assert techniques.source(techniques.ARMS["soup"][1], epochs=5) == techniques.ARMS["soup"][1]  # no source: as is


def test_techniques_table_compares_each_arm_with_the_baseline_held_out() -> None:
    from pipeline.benchmarks import techniques

    rows = [{"arm": "baseline", "description": "base", "cv": 0.8, "holdout": 0.85, "wall_seconds": 10,
             "train_cpu_seconds": 20},
            {"arm": "refit", "description": "refit", "cv": None, "holdout": 0.8625, "wall_seconds": 5,
             "train_cpu_seconds": 9}]  # fmt: skip
    lines = techniques.table(rows).splitlines()
    assert lines[2] == "| base | 0.8000 | 0.8500 |  | 10 | 20 |"
    assert lines[3] == "| refit |  | 0.8625 | +0.0125 | 5 | 9 |"


def test_techniques_stage_failures_surface_as_one_line() -> None:
    from pipeline.benchmarks import techniques
    from pipeline.core.errors import UserError

    with pytest.raises(UserError, match=r"`pipeline no-such-stage` failed: .*invalid choice"):
        techniques.timed("no-such-stage")
