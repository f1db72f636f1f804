"""TTA views are exact and shape-preserving; metrics agree with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.metrics import METRICS, score
from pipeline.inference.tta import VIEWS, predict_views


def test_hflip_twice_is_identity_and_views_keep_shape() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(VIEWS["hflip"](VIEWS["hflip"](x)), x)
    assert torch.equal(VIEWS["vflip"](VIEWS["vflip"](x)), x)
    assert not torch.equal(VIEWS["hflip"](x), x)
    for name, view in VIEWS.items():
        assert view(x).shape == x.shape, name


def test_predict_views_averages_probabilities() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x = torch.randn(3, 3, 4, 4)
    soft = lambda logits: logits.softmax(dim=1)  # noqa: E731
    expected = (soft(model(x)) + soft(model(x.flip(-1)))) / 2
    got = predict_views(model, x, ["identity", "hflip"], soft)
    assert got.shape == (3, 5)
    assert torch.allclose(got, expected)
    assert torch.allclose(predict_views(model, x, [], soft), soft(model(x)))  # [] = no TTA


def test_metrics_by_hand() -> None:
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.1, 0.8, 0.1]])
    assert score("accuracy", y, p) == pytest.approx(0.75)
    assert score("error_rate", y, p) == pytest.approx(0.25)
    assert score("log_loss", y, p) == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 0.8])))
    assert score("quadratic_weighted_kappa", y, y[:, None] == np.arange(3)) == pytest.approx(1.0)
    multi = np.array([[1, 0], [0, 1], [1, 1]])
    assert score("f1_micro", multi, np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])) == pytest.approx(
        6 / 7
    )  # TP 3, FP 0, FN 1
    assert score("roc_auc", multi, multi * 0.9 + 0.05) == pytest.approx(1.0)
    assert set(METRICS) >= {"accuracy", "error_rate", "log_loss", "f1_macro", "f1_micro", "roc_auc"}
