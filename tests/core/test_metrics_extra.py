"""The extra competition metrics against scikit-learn or hand-computed values, and how config names them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pipeline.core import metrics
from pipeline.core.config import DataConfig
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.metrics import canonical, check_task, goodness, higher_is_better, is_better, score
from pipeline.inference.submission import format_submission
from pipeline.inference.thresholds import fit_thresholds

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 4, 60)
P = RNG.dirichlet(np.ones(4), 60)
YM = (RNG.random((60, 3)) > 0.5).astype(int)
PM = RNG.random((60, 3))


def test_single_label_metrics_match_sklearn() -> None:
    hard = P.argmax(axis=1)
    assert score("balanced_accuracy", Y, P) == pytest.approx(skm.balanced_accuracy_score(Y, hard))
    assert score("matthews_corrcoef", Y, P) == pytest.approx(skm.matthews_corrcoef(Y, hard))
    for k in (1, 2, 3):
        assert score(f"top_k_accuracy@{k}", Y, P) == pytest.approx(skm.top_k_accuracy_score(Y, P, k=k))
    for average in ("macro", "micro"):
        for beta in (0.5, 2):
            expected = skm.fbeta_score(Y, hard, beta=beta, average=average)
            assert score(f"fbeta_{average}@{beta}", Y, P) == pytest.approx(expected)
    # one true class per row and k = every class: MAP@k is the mean reciprocal rank, sklearn's LRAP
    assert score("map@4", Y, P) == pytest.approx(skm.label_ranking_average_precision_score(np.eye(4)[Y], P))


def test_multi_label_metrics_match_sklearn() -> None:
    hard = (PM >= 0.5).astype(int)
    for average in ("macro", "micro", "samples"):
        expected = skm.fbeta_score(YM, hard, beta=2, average=average, zero_division=0)
        assert score(f"fbeta_{average}@2", YM, PM) == pytest.approx(expected)
    per_column = [skm.log_loss(YM[:, j], PM[:, j]) for j in range(3)]
    assert score("mean_columnwise_log_loss", YM, PM) == pytest.approx(np.mean(per_column))
    assert score("matthews_corrcoef", YM, PM) == pytest.approx(skm.matthews_corrcoef(YM.ravel(), hard.ravel()))
    per_label = [skm.balanced_accuracy_score(YM[:, j], hard[:, j]) for j in range(3)]
    assert score("balanced_accuracy", YM, PM) == pytest.approx(np.mean(per_label))


def test_map_at_k_by_hand() -> None:
    p = np.array([[0.1, 0.5, 0.2, 0.15, 0.05], [0.5, 0.1, 0.2, 0.15, 0.05], [0.1, 0.2, 0.3, 0.35, 0.05]])
    y = np.array([2, 0, 4])  # ranks 2, 1, 5 -> 1/2, 1, 0 (outside the top 3)
    assert score("map@3", y, p) == pytest.approx((0.5 + 1 + 0) / 3)
    assert score("map@5", y, p) == pytest.approx((0.5 + 1 + 0.2) / 3)
    # multi-label (Kaggle's apk): row 0 has labels {1, 3}, top-3 = 1, 2, 3 -> (1/1 + 2/3) / 2
    ym = np.array([[0, 1, 0, 1, 0]])
    assert score("map@3", ym, p[:1]) == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("accuracy", "accuracy"),
        ({"name": "map", "k": 5}, "map@5"),
        ({"name": "top_k_accuracy", "k": 3}, "top_k_accuracy@3"),
        ({"name": "fbeta", "beta": 2, "average": "samples"}, "fbeta_samples@2"),
        ({"name": "fbeta", "beta": 0.5}, "fbeta_macro@0.5"),
        ({"name": "balanced_accuracy"}, "balanced_accuracy"),
        ({"function": "m:f", "higher_is_better": False}, "custom(m:f, higher_is_better=false, needs=probabilities)"),
    ],
)
def test_config_forms_become_one_name(given: object, expected: str) -> None:
    assert canonical(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"name": "map"}, "metric.k: missing"),
        ({"name": "map", "k": 5, "beta": 1}, "unknown key(s) beta"),
        ({"name": "fbeta", "beta": 1, "average": "weighted"}, "metric.average"),
        ({"name": "nope"}, "metric.name"),
        ({"function": "m:f", "higher_is_better": "yes"}, "metric.higher_is_better"),
        ({"function": "m:f", "higher_is_better": True, "needs": "logits"}, "metric.needs"),
        ({"function": "m:f", "higher_is_better": True, "direction": 1}, "unknown key(s) direction"),
        (3, "metric: expected a name"),
    ],
)
def test_wrong_metric_mappings_name_the_key(given: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        canonical(given)


@pytest.mark.parametrize("name", ["map@0", "map@x", "fbeta_macro@-1", "fbeta_weighted@2", "top_k@3", "nope"])
def test_malformed_names_fail(name: str) -> None:
    with pytest.raises(ConfigError, match="metric"):
        metrics.resolve(name)


def test_task_restrictions() -> None:
    check_task("map@5", "multi_label")
    with pytest.raises(ConfigError, match="top_k_accuracy@3 cannot score data.task multi_label"):
        check_task("top_k_accuracy@3", "multi_label")
    with pytest.raises(ConfigError, match="fbeta_samples@1 cannot score data.task single_label"):
        check_task("fbeta_samples@1", "single_label")


def test_direction_helpers_on_configured_metrics() -> None:
    assert higher_is_better("map@5") and higher_is_better("fbeta_micro@2")
    assert not higher_is_better("mean_columnwise_log_loss")
    assert is_better("top_k_accuracy@2", 0.8, 0.7) and not is_better("mean_columnwise_log_loss", 0.8, 0.7)
    assert goodness("mean_columnwise_log_loss", 0.3) == -0.3


def _write_module(folder: Path, body: str, name: str = "mymetrics") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(body)


def test_custom_metric_from_the_project_folder(project: Path) -> None:
    _write_module(project, "def score(y, labels):\n    return float((y == labels).mean()) * 2\n", "projmetric")
    name = canonical({"function": "projmetric:score", "higher_is_better": True, "needs": "labels"})
    assert score(name, Y, P) == pytest.approx(2 * np.mean(Y == P.argmax(axis=1)))
    assert higher_is_better(name) and metrics.uses_thresholds(name)


def test_custom_metric_from_the_configs_folder_through_config(project: Path, competition) -> None:  # noqa: ANN001
    import yaml

    from pipeline.core.config import load_config

    competition("csv")
    _write_module(project / "configs" / "toy", "def loss(y, p):\n    return 1.0 - float(p.max(axis=1).mean())\n",
                  "toymetric")  # fmt: skip
    values = {"data": {"classes": ["cat", "dog", "fox"]},
              "metric": {"function": "toymetric:loss", "higher_is_better": False}}  # fmt: skip
    (project / "configs/toy/competition.yaml").write_text(yaml.safe_dump(values))
    cfg = load_config(project / "configs/toy/competition.yaml")
    assert cfg.metric == "custom(toymetric:loss, higher_is_better=false, needs=probabilities)"
    assert score(cfg.metric, Y, P) == pytest.approx(1 - P.max(axis=1).mean())
    assert is_better(cfg.metric, 0.1, 0.2)


def test_custom_metric_errors(project: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        metrics.resolve("custom(no_such_module:f, higher_is_better=true, needs=labels)")
    _write_module(project, "def text(y, p):\n    return 'good'\n\ndef boom(y, p):\n    raise ValueError('bad')\n",
                  "badmetric")  # fmt: skip
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        metrics.resolve("custom(badmetric:missing, higher_is_better=true, needs=labels)")
    with pytest.raises(UserError, match="returned 'good', not a number"):
        score("custom(badmetric:text, higher_is_better=true, needs=labels)", Y, P)
    with pytest.raises(UserError, match="raised ValueError: bad"):
        score("custom(badmetric:boom, higher_is_better=true, needs=labels)", Y, P)


def test_thresholds_fit_for_fbeta_not_for_map() -> None:
    y = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    p = np.array([[0.3, 0.1], [0.35, 0.2], [0.1, 0.9], [0.4, 0.8]])  # label 0 is positive at 0.3+
    fitted = fit_thresholds("multi_label", "fbeta_micro@1", y, p)
    assert fitted["kind"] == "multi_label" and fitted["thresholds"][0] <= 0.3
    assert fit_thresholds("multi_label", "map@2", y, p) == {"kind": "none"}


def test_map_submission_lists_the_top_k_classes() -> None:
    data = DataConfig(classes=["a", "b", "c", "d"], submission_format="label")
    probs = pd.DataFrame({"id": ["x", "y"], "a": [0.1, 0.4], "b": [0.5, 0.3], "c": [0.3, 0.2], "d": [0.1, 0.1]})
    frame = format_submission(probs, data, top_k=metrics.submission_top_k("map@3"))
    assert list(frame["label"]) == ["b c a", "a b c"]
    assert metrics.submission_top_k("accuracy") is None
