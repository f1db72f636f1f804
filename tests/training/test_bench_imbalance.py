"""bench-imbalance's data and table: the shares it promises, every arm reported (losers included)."""

from __future__ import annotations

import numpy as np

from pipeline.benchmarks import imbalance


def test_skewed_rows_follow_the_shares() -> None:
    labels = np.repeat(np.arange(10), 1000)  # a balanced split, as Fashion-MNIST's
    rows = imbalance.skewed_rows(labels, 2000, np.random.default_rng(0))
    counts = np.bincount(labels[rows], minlength=10)
    assert list(counts) == [round(share * 2000) for share in imbalance.SHARES]
    assert len(set(rows)) == len(rows)  # no row twice


def test_the_table_reports_every_arm_and_the_gap_to_the_starter() -> None:
    def row(arm: str, f1: float, metric: str = "f1_macro") -> dict:
        return {"arm": arm, "metric": metric, "decision": "none", "accuracy": 0.7, "f1_macro": f1,
                "f1_macro_decided": f1, "accuracy_decided": 0.7, "min_recall": 0.0}  # fmt: skip

    rows = [row("baseline", 0.40), row(imbalance.STARTER, 0.30), row("focal", 0.25)]
    text = imbalance.table(rows)
    assert text.count("\n") == 2 + len(rows)
    assert "+10.0 pts" in text and "-5.0 pts" in text  # the loser is there, with its gap


def test_each_epoch_budget_is_compared_with_its_own_starter() -> None:
    def row(arm: str, f1: float, epochs: int) -> dict:
        return {"arm": arm, "metric": "f1_macro", "decision": "none", "accuracy": 0.7, "f1_macro": f1,
                "f1_macro_decided": f1, "accuracy_decided": 0.7, "min_recall": 0.0, "epochs": epochs}  # fmt: skip

    rows = [row(imbalance.STARTER, 0.30, 3), row("sampler", 0.60, 3), row(imbalance.STARTER, 0.50, 10),
            row("sampler", 0.70, 10)]  # fmt: skip
    lines = imbalance.table(rows).splitlines()[2:]
    assert lines[1].startswith("| 3 |") and lines[1].endswith("| +30.0 pts |")
    assert lines[3].startswith("| 10 |") and lines[3].endswith("| +20.0 pts |")  # not +40 against the 3-epoch one
