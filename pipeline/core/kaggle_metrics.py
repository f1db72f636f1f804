"""Kaggle's evaluation-metric names -> the pipeline's metric names (pipeline.core.metrics).

Input: the `evaluationMetric` string of the competition's metadata (kagglesdk ApiCompetition.evaluation_metric), as
`download` recorded it in data/raw/<comp>/.complete. Output: the pipeline's metric as configured (a plain name or a
parametrised one such as map@5), or None when the name is not one this table knows: `init` then says so and asks for
`metric:` instead of falling back to accuracy in silence. Names are matched after lower-casing and dropping
everything but letters, digits and `@` (Kaggle spells one metric several ways: "Mean F1-Score", "MeanFScore").
"""

from __future__ import annotations

import re

# normalised Kaggle name -> pipeline metric. Keep the keys normalised (see normalise()).
KAGGLE_METRICS: dict[str, str] = {
    "categorizationaccuracy": "accuracy",
    "accuracy": "accuracy",
    "accuracyscore": "accuracy",
    "multiclassaccuracy": "accuracy",
    "classificationaccuracy": "accuracy",
    "errorrate": "error_rate",
    "macrofscore": "f1_macro",
    "macrof1": "f1_macro",
    "macrof1score": "f1_macro",
    "f1macro": "f1_macro",
    "fscoremacro": "f1_macro",
    "meanf1score": "f1_macro",
    "meanfscore": "f1_macro",
    "microfscore": "f1_micro",
    "microf1": "f1_micro",
    "microf1score": "f1_micro",
    "f1micro": "f1_micro",
    "fscoremicro": "f1_micro",
    "f2score": "fbeta_samples@2",  # planet-amazon's "F2 score", averaged per image
    "meanf2score": "fbeta_samples@2",
    "quadraticweightedkappa": "quadratic_weighted_kappa",
    "qwk": "quadratic_weighted_kappa",
    "cohenkappa": "quadratic_weighted_kappa",
    "quadratickappa": "quadratic_weighted_kappa",
    "balancedaccuracy": "balanced_accuracy",
    "balancedaccuracyscore": "balanced_accuracy",
    "matthewscorrelationcoefficient": "matthews_corrcoef",
    "mcc": "matthews_corrcoef",
    "logloss": "log_loss",
    "multiclassloss": "log_loss",
    "multiclasslogloss": "log_loss",
    "binarylogloss": "log_loss",
    "crossentropy": "log_loss",
    "meancolumnwiselogloss": "mean_columnwise_log_loss",
    "auc": "roc_auc",
    "rocauc": "roc_auc",
    "areaunderreceiveroperatingcharacteristiccurve": "roc_auc",
    "meancolumnwiseareaunderreceiveroperatingcharacteristiccurve": "roc_auc",
    "meancolumnwiseauc": "roc_auc",
    "rootmeansquarederror": "rmse",
    "rmse": "rmse",
}
_MAP_AT = re.compile(r"^(?:map|meanaverageprecision)@?(\d+)$")  # MAP@5, Mean Average Precision @ 5, MAP@{K} is not


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9@]", "", name.lower())


def pipeline_metric(kaggle_name: str) -> str | None:
    """The pipeline's metric for Kaggle's `evaluationMetric` name, or None when it is unknown (or empty)."""
    key = normalise(kaggle_name or "")
    if not key:
        return None
    match = _MAP_AT.match(key)
    if match and int(match.group(1)) >= 1:
        return f"map@{match.group(1)}"
    if key in KAGGLE_METRICS:
        return KAGGLE_METRICS[key]
    # Spellings outside the table: an F-score that names its averaging. A bare "F1 Score" stays unknown (binary
    # positive-class F1, micro or macro?): init asks rather than guesses.
    if re.search(r"f1|fscore|fmeasure", key):
        for average in ("macro", "micro"):
            if average in key:
                return f"f1_{average}"
    return None
