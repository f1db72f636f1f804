"""Kaggle's evaluation-metric names map to the pipeline's metrics; unknown or ambiguous names map to None."""

from __future__ import annotations

import pytest

from pipeline.core.kaggle_metrics import KAGGLE_METRICS, normalise, pipeline_metric
from pipeline.core.metrics import resolve

CASES = {
    "Categorization Accuracy": "accuracy",
    "MacroFScore": "f1_macro",
    "Macro F1 Score": "f1_macro",
    "F1 Score (Macro)": "f1_macro",
    "Mean F1-Score": "f1_macro",
    "Micro-averaged F1": "f1_micro",
    "Quadratic Weighted Kappa": "quadratic_weighted_kappa",
    "Multi-class Log Loss": "log_loss",
    "Multiclass Loss": "log_loss",
    "Area Under Receiver Operating Characteristic Curve": "roc_auc",
    "Mean Columnwise Area Under Receiver Operating Characteristic Curve": "roc_auc",
    "MAP@5": "map@5",
    "Mean Average Precision @ 3": "map@3",
    "Root Mean Squared Error": "rmse",
    "Balanced Accuracy Score": "balanced_accuracy",
    "Matthews Correlation Coefficient": "matthews_corrcoef",
    "F2 Score": "fbeta_samples@2",
    # unknown or ambiguous: init asks for `metric:` instead of guessing
    "F1 Score": None,
    "Weighted Dice Coefficient": None,
    "": None,
}


@pytest.mark.parametrize(("kaggle_name", "expected"), CASES.items())
def test_kaggle_metric_names(kaggle_name: str, expected: str | None) -> None:
    assert pipeline_metric(kaggle_name) == expected


def test_every_mapped_metric_exists_and_keys_are_normalised() -> None:
    for key, metric in KAGGLE_METRICS.items():
        assert normalise(key) == key
        resolve(metric)  # raises for a name the pipeline does not know
