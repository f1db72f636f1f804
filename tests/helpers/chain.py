"""The chain as a user runs it, for tests: a competition.yaml as init infers it, and every stage through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.builders import run_main, write_competition

STAGES = ("folds", "train", "predict", "ensemble", "submission")


def write_competition_yaml(project: Path, layout: str, comp: str = "toy") -> None:
    """competition.yaml as init infers it (without baseline.yaml, which needs weights)."""
    import yaml

    from pipeline.data.layout import infer_data

    raw = write_competition(project / "data" / "raw" / comp, layout, n_train=30, n_test=6)
    data, metric, _ = infer_data(raw)
    folder = project / "configs" / comp
    folder.mkdir(parents=True, exist_ok=True)
    values = {"data": vars(data), "metric": metric, "folds": {"n_folds": 2, "seed": 0}}
    (folder / "competition.yaml").write_text(yaml.safe_dump(values))


def run_chain(capsys: pytest.CaptureFixture, config: Path, *extra: str) -> dict[str, str]:
    logs = {}
    for stage in STAGES:
        result = run_main(capsys, stage, "--config", str(config), *extra)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
        logs[stage] = result.stderr
    return logs
