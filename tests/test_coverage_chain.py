"""Each new metric, loss and augmentation policy through the whole chain (folds -> submission) on a tiny
generated competition: one case combines one metric, one loss and one policy, so every one runs at least once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.builders import tiny_experiment
from helpers.chain import run_chain, write_competition_yaml

CASES = [  # layout, metric, train, augment, model
    ("csv", {"name": "map", "k": 2}, {"loss": "focal"}, {"policy": "light"}, {}),
    ("csv", "top_k_accuracy@2", {"loss": "asymmetric"}, {"policy": "medium"}, {"drop_path_rate": 0.1}),
    ("csv", "balanced_accuracy", {"loss": "cross_entropy", "mixup": 0.4}, {"policy": "heavy"}, {"drop_rate": 0.2}),
    (
        "csv",
        "matthews_corrcoef",
        {"loss": "focal", "cutmix": 1.0, "label_smoothing": 0.1},
        {"policy": "randaugment", "erasing": 0.5},
        {},
    ),  # fmt: skip
    (
        "csv",
        {"name": "fbeta", "beta": 2, "average": "macro"},
        {"loss": "asymmetric", "mixup": 0.4},
        {"policy": "trivialaugment", "coarse_dropout": 0.5},
        {},
    ),  # fmt: skip
    (
        "csv",
        {"function": "chainmetric:score", "higher_is_better": True, "needs": "labels"},
        {},
        {"policy": "default"},
        {},
    ),
    (
        "multilabel_text",
        "fbeta_samples@2",
        {"loss": "asymmetric", "mixup": 0.4},
        {"policy": "custom", "custom": ["CLAHE", {"Affine": {"rotate": [-10, 10], "p": 0.5}}]},
        {},
    ),  # fmt: skip
    ("multilabel_text", "mean_columnwise_log_loss", {"loss": "focal"}, {"policy": "light"}, {}),
    ("multilabel_text", "fbeta_micro@0.5", {"loss": "bce"}, {"policy": "medium"}, {}),
]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize(("layout", "metric", "train", "augment", "model"), CASES, ids=[str(c[1]) for c in CASES])
def test_metric_loss_policy_through_the_chain(
    project: Path, capsys: pytest.CaptureFixture, layout: str, metric: object, train: dict, augment: dict, model: dict
) -> None:
    write_competition_yaml(project, layout)
    comp_yaml = project / "configs/toy/competition.yaml"
    values = yaml.safe_load(comp_yaml.read_text())
    values["metric"] = metric
    comp_yaml.write_text(yaml.safe_dump(values))
    (project / "configs/toy/chainmetric.py").write_text(
        "def score(y, labels):\n    return float((y == labels).mean())\n"
    )
    config = tiny_experiment(project, train={"batch_size": 8, **train}, augment=augment, model=model)
    run_chain(capsys, config)
    run = project / "data/runs/toy/tiny"
    scores = json.loads((run / "scores.json").read_text())
    assert scores["metric"] != "" and isinstance(scores["cv"], float)
    assert all(math.isfinite(value) for value in [scores["cv"], *scores["folds"]]), scores  # NaN is a failed metric
    oof = pd.read_csv(run / "oof.csv")
    assert oof.drop(columns="id").notna().all().all() and len(oof) == 30  # every training row, finite probabilities
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["loss"] == train.get("loss", "auto") and resolved["augment"]["policy"] == augment["policy"]
    for key, value in model.items():
        assert resolved["model"][key] == value
    submission = pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str)
    if isinstance(metric, dict) and metric.get("name") == "map":  # MAP@2: the two most probable classes
        assert submission["label"].str.split().map(len).eq(2).all()
