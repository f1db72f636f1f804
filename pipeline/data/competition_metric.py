"""The metric `init` writes into competition.yaml: Kaggle's own, when `download` recorded it.

Reads data/raw/<comp>/.complete (JSON; `evaluation_metric`: the competition's metric name from Kaggle's metadata,
written by pipeline.kaggle.download). Writes nothing: returns the metric and the lines init prints about it.
- Kaggle's name maps (pipeline.core.kaggle_metrics) to a metric that can score the task: that metric.
- Kaggle's name is unknown, or cannot score the task: the metric inferred from the submission format, and a warning
  that names Kaggle's metric and asks for `metric:` in competition.yaml.
- No record (data placed by hand, a Kernel mount, the demo): the inferred metric, and a note saying where it came
  from and that `metric:` should be set to the competition's.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import ConfigError
from pipeline.core.kaggle_metrics import pipeline_metric
from pipeline.core.metrics import check_task

ASK = "set `metric:` in {where} to the metric Kaggle scores (e.g. f1_macro, quadratic_weighted_kappa, map@5)"


def recorded_metric(stamp: Path) -> str | None:
    """Kaggle's metric name as download recorded it, or None (no stamp, an older stamp, hand-placed data)."""
    try:
        facts = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    name = str(facts.get("evaluation_metric") or "").strip() if isinstance(facts, dict) else ""
    return name or None


def choose_metric(stamp: Path, inferred: str, task: str, where: str) -> tuple[str, list[str], bool]:
    """(metric, lines to print, whether the user must act) from the download record and the inferred default."""
    kaggle_name = recorded_metric(stamp)
    if kaggle_name is None:
        return inferred, [f"metric: {inferred} (inferred from the submission format: no Kaggle metadata recorded for "
                          f"this data); {ASK.format(where=where)} if it scores something else"], False  # fmt: skip
    mapped = pipeline_metric(kaggle_name)
    if mapped is None:
        return inferred, [f"WARNING: Kaggle scores this competition with {kaggle_name!r}, which the pipeline does not "
                          f"know; metric is {inferred} for now: {ASK.format(where=where)}, or a custom function "
                          "(docs/imbalance.md)"], True  # fmt: skip
    try:
        check_task(mapped, task)
    except ConfigError:
        line = (f"WARNING: Kaggle scores this competition with {kaggle_name!r} ({mapped}), which cannot score {task} "
                f"data here; metric is {inferred} for now: {ASK.format(where=where)}")  # fmt: skip
        return inferred, [line], True
    return mapped, [f"metric: {mapped} (Kaggle's evaluation metric: {kaggle_name!r})"], False
