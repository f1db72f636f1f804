"""init on skewed classes: it prints the class shares, warns when the largest class is > 5x the smallest, says where
the metric came from, and turns on the measured training change only for metrics that weight classes equally."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.builders import write_competition
from pipeline.commands import init as init_stage
from pipeline.data import class_balance


def skew(raw: Path, counts: dict[str, int]) -> None:
    """Relabel train.csv's rows: the first counts[c] rows of class c, in order (the images stay as they are)."""
    table = pd.read_csv(raw / "train.csv", dtype=str)
    labels = [name for name, count in counts.items() for _ in range(count)]
    table.loc[:, "label"] = labels[: len(table)]
    table.to_csv(raw / "train.csv", index=False)


def run_init(project: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict, dict]:
    weights = project / "data" / "weights" / "tf_efficientnet_lite0.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"stand-in")  # init only points model.pretrained at a local file
    init_stage.run(argparse.Namespace(comp="toy", config=None, force=True))
    configs = project / "configs" / "toy"
    load = lambda name: yaml.safe_load((configs / name).read_text())  # noqa: E731
    return capsys.readouterr().out, load("competition.yaml"), load("baseline.yaml")


def test_skewed_classes_are_shown_and_warned_about(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_competition(project / "data" / "raw" / "toy", "csv")
    skew(raw, {"cat": 36, "dog": 2, "fox": 2})
    out, competition, baseline = run_init(project, capsys)
    assert "class shares: cat 90.0%, dog 5.0%, fox 5.0%" in out
    assert "WARNING: imbalanced classes: the largest (cat) is 18x the smallest" in out
    assert "Accuracy favours the majority" in out and "docs/imbalance.md" in out
    # hand-placed data: today's metric, and a note saying it was inferred, not read from Kaggle
    assert competition["metric"] == "accuracy"
    assert "no Kaggle metadata recorded" in out and "set `metric:`" in out
    assert "sampler" not in baseline["train"]  # an accuracy competition's baseline is today's


def test_balanced_classes_get_no_warning(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_competition(project / "data" / "raw" / "toy", "csv", n_train=30)
    out, _, _ = run_init(project, capsys)
    assert "class shares: cat 33.3%, dog 33.3%, fox 33.3%" in out
    assert "imbalanced" not in out


def test_kaggles_macro_f1_on_skewed_classes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_competition(project / "data" / "raw" / "toy", "csv")
    skew(raw, {"cat": 36, "dog": 2, "fox": 2})
    (raw / ".complete").write_text(json.dumps({"comp": "toy", "evaluation_metric": "MacroFScore"}))
    out, competition, baseline = run_init(project, capsys)
    assert competition["metric"] == "f1_macro"
    assert "metric: f1_macro (Kaggle's evaluation metric: 'MacroFScore')" in out
    assert "weights classes equally: ensemble fits per-class logit offsets" in out
    assert baseline["train"]["sampler"] == "balanced"  # make bench-imbalance's winner (class_balance.WINNER)
    assert "(make bench-imbalance)" in out


@pytest.mark.parametrize(("metric", "task", "shares", "turned_on"), [
    ("f1_macro", "single_label", {"a": 0.9, "b": 0.1}, True),
    ("balanced_accuracy", "single_label", {"a": 0.9, "b": 0.1}, True),
    ("accuracy", "single_label", {"a": 0.9, "b": 0.1}, False),  # accuracy unchanged: the baseline stays as it was
    ("f1_macro", "single_label", {"a": 0.6, "b": 0.4}, False),  # not skewed: nothing to fix
    ("f1_macro", "multi_label", {"a": 0.9, "b": 0.1}, False),
])  # fmt: skip
def test_the_winner_only_for_equal_weight_metrics_on_skewed_data(
    monkeypatch: pytest.MonkeyPatch, metric: str, task: str, shares: dict, turned_on: bool
) -> None:
    monkeypatch.setattr(class_balance, "WINNER", {"sampler": "balanced"})
    assert class_balance.imbalance_recipe(shares, metric, task) == ({"sampler": "balanced"} if turned_on else {})
