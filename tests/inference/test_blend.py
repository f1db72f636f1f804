"""Blending experiments on OOF: better than either part, honest nested CV, refuses mismatched folds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import pipeline.inference.blend as blend_module
from helpers.builders import run_main

CLASSES = ["a", "b"]


def write_scaffold(project: Path, classes: list[str], metric: str, labels: np.ndarray, folds: np.ndarray) -> list[str]:
    """configs/toy/competition.yaml and data/processed/toy/folds.csv for `labels` in `folds`; returns the ids."""
    ids = [f"r{i:03d}" for i in range(len(labels))]
    comp = project / "configs/toy"
    comp.mkdir(parents=True)
    values = {"data": {"classes": classes}, "metric": metric, "folds": {"n_folds": int(folds.max()) + 1}}
    (comp / "competition.yaml").write_text(yaml.safe_dump(values))
    processed = project / "data/processed/toy"
    processed.mkdir(parents=True)
    frame = pd.DataFrame({"id": ids, "image": ids, "label": labels, "fold": folds})
    frame.to_csv(processed / "folds.csv", index=False)
    return ids


def write_experiment(run: Path, oof: pd.DataFrame, folds: np.ndarray, test: pd.DataFrame) -> None:
    """An experiment's per-fold OOF files, its oof.csv and test.csv."""
    for k in range(int(folds.max()) + 1):
        (run / f"fold{k}").mkdir(parents=True)
        oof[folds == k].to_csv(run / f"fold{k}/oof.csv", index=False)
    oof.to_csv(run / "oof.csv", index=False)
    test.to_csv(run / "test.csv", index=False)


def build(project: Path, rng_seed: int = 0, n: int = 60) -> np.ndarray:
    """A competition with folds.csv and two experiments whose errors fall on different rows."""
    rng = np.random.default_rng(rng_seed)
    labels = np.array(["a", "b"] * (n // 2))
    folds = np.arange(n) % 3
    ids = write_scaffold(project, CLASSES, "log_loss", labels, folds)
    truth = (labels == "b").astype(float)
    for exp, wrong in (("left", np.arange(n) % 2 == 0), ("right", np.arange(n) % 2 == 1)):
        p_true = np.where(wrong, 0.3, 0.9) + rng.uniform(-0.02, 0.02, n)  # confident where right, wrong elsewhere
        p_b = np.where(truth == 1, p_true, 1 - p_true)
        frame = pd.DataFrame({"id": ids, "a": 1 - p_b, "b": p_b})
        test = pd.DataFrame({"id": ["t1", "t2"], "a": [0.6, 0.3], "b": [0.4, 0.7]})
        write_experiment(project / "data/runs/toy" / exp, frame, folds, test)
    return folds


def write_blend(project: Path, method: str) -> None:
    (project / "configs/toy/blend.yaml").write_text(yaml.safe_dump({"name": "duo", "experiments": ["left", "right"],
                                                                    "method": method}))  # fmt: skip


@pytest.mark.parametrize("method", ["mean", "geometric", "rank", "fitted"])
def test_blend_of_complementary_experiments_beats_either(project: Path, capsys, method: str) -> None:
    build(project)
    write_blend(project, method)
    result = run_main(capsys, "blend", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    scores = yaml.safe_load((project / "data/runs/toy/blend/duo/scores.json").read_text())
    if method != "rank":  # ranks are not probabilities: log loss of a rank blend is not comparable
        assert scores["cv"] < min(scores["experiments"].values())  # log loss: lower is better
    weights = np.array(list(scores["weights"].values()))
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    folds_csv = (project / "data/processed/toy/folds.csv").read_bytes()  # what a pseudo-label round checks (issue 14)
    assert scores["folds_digest"] == hashlib.sha256(folds_csv).hexdigest() and scores["sample"] == 0
    submission = pd.read_csv(project / "submissions/toy/duo.csv")
    assert list(submission["id"]) == ["t1", "t2"]


def test_nested_fit_never_sees_the_held_out_fold(project: Path, capsys, monkeypatch) -> None:
    folds = build(project)
    write_blend(project, "fitted")
    seen_sizes = []
    real_fit = blend_module.fit_weights

    def spy(stack: np.ndarray, targets: np.ndarray, metric: str, task: str) -> np.ndarray:
        seen_sizes.append(stack.shape[1])
        return real_fit(stack, targets, metric, task)

    monkeypatch.setattr(blend_module, "fit_weights", spy)
    assert run_main(capsys, "blend", "--comp", "toy").returncode == 0
    per_fold = [int((folds != k).sum()) for k in range(3)]
    assert seen_sizes[:3] == per_fold  # each nested fit saw exactly the other folds' rows
    assert seen_sizes[3] == len(folds)  # the final weights use every row
    scores = yaml.safe_load((project / "data/runs/toy/blend/duo/scores.json").read_text())
    assert "nested_cv" in scores and "best_single" in scores and scores["chosen"] in ("fitted", "mean", "best_single")


def test_mismatched_folds_are_refused(project: Path, capsys) -> None:
    build(project)
    write_blend(project, "mean")
    right = project / "data/runs/toy/right"
    a, b = pd.read_csv(right / "fold0/oof.csv"), pd.read_csv(right / "fold1/oof.csv")
    pd.concat([a, b.head(1)]).to_csv(right / "fold0/oof.csv", index=False)
    b.iloc[1:].to_csv(right / "fold1/oof.csv", index=False)
    result = run_main(capsys, "blend", "--comp", "toy")
    assert result.returncode == 2 and "different folds" in result.stderr
    assert not (project / "data/runs/toy/blend/duo/scores.json").exists()


def build_bad_member(project: Path, n: int = 200) -> None:
    """Ten classes, accuracy: `good` is right on about half the rows, `bad` on about a sixth (0.51 vs 0.16 CV)."""
    rng = np.random.default_rng(1)
    classes = [f"c{k}" for k in range(10)]
    labels = rng.integers(0, 10, n)
    folds = np.arange(n) % 5
    ids = write_scaffold(project, classes, "accuracy", np.array(classes)[labels], folds)
    for exp, right_share in (("good", 0.51), ("bad", 0.16)):
        right = rng.random(n) < right_share
        guess = np.where(right, labels, (labels + rng.integers(1, 10, n)) % 10)
        probs = rng.dirichlet(np.ones(10), n) * 0.5
        probs[np.arange(n), guess] += 0.5 + rng.uniform(0, 0.3, n)  # confident either way: the bad member misleads
        probs /= probs.sum(axis=1, keepdims=True)
        out = pd.DataFrame(probs, columns=classes)
        out.insert(0, "id", ids)
        test = pd.DataFrame(np.full((2, 10), 0.1), columns=classes)
        test.insert(0, "id", ["t1", "t2"])
        write_experiment(project / "data/runs/toy" / exp, out, folds, test)
    (project / "configs/toy/blend.yaml").write_text(yaml.safe_dump({"name": "duo", "experiments": ["good", "bad"]}))


@pytest.mark.parametrize("method", ["fitted", "greedy", "mean"])
def test_a_bad_member_never_drags_the_blend_below_the_best_single(project: Path, capsys, method: str) -> None:
    build_bad_member(project)
    (project / "configs/toy/blend.yaml").write_text(yaml.safe_dump({"name": "duo", "experiments": ["good", "bad"],
                                                                    "method": method}))  # fmt: skip
    result = run_main(capsys, "blend", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    scores = yaml.safe_load((project / "data/runs/toy/blend/duo/scores.json").read_text())
    good, bad = scores["experiments"]["good"], scores["experiments"]["bad"]
    assert good > 0.4 and bad < 0.25  # the set-up: one member much worse
    assert scores["mean_cv"] < good  # the plain mean loses to the good member alone...
    assert scores["cv"] >= good  # ...but the blend never does
    assert scores["chosen"] in ("best_single", method) and scores["reason"]
    if scores["chosen"] == "best_single":
        assert scores["weights"] == {"good": 1.0, "bad": 0.0}


def test_fitted_weights_move_on_a_step_metric(project: Path) -> None:
    """Accuracy is flat almost everywhere; the log-loss proxy still finds that `bad` deserves little weight."""
    build_bad_member(project)
    folds = pd.read_csv(project / "data/processed/toy/folds.csv")
    stack = np.stack(
        [pd.read_csv(project / f"data/runs/toy/{e}/oof.csv").iloc[:, 1:].to_numpy() for e in ("good", "bad")]
    )
    targets = folds["label"].str[1:].astype(int).to_numpy()
    weights = blend_module.fit_weights(stack, targets, "accuracy", "single_label")
    assert weights[0] > 0.8
    greedy = blend_module.greedy_weights(stack, targets, "accuracy", "single_label")
    assert greedy[0] > greedy[1]


@pytest.mark.parametrize("taken", ["config", "run"])
def test_a_blend_named_like_an_experiment_is_refused_before_it_writes(project: Path, capsys, taken: str) -> None:
    """blend.yaml's name is the blend's submission file: an experiment's name would overwrite its submission."""
    build(project)
    (project / "configs/toy/blend.yaml").write_text(yaml.safe_dump({"name": "left", "experiments": ["left", "right"]}))
    if taken == "config":
        (project / "configs/toy/left.yaml").write_text("train:\n  epochs: 1\n")
    else:
        (project / "data/runs/toy/left/scores.json").write_text("{}")
    submission = project / "submissions/toy/left.csv"
    submission.parent.mkdir(parents=True)
    submission.write_text("id,label\nt1,a\n")
    result = run_main(capsys, "blend", "--comp", "toy")
    assert result.returncode == 2 and "name 'left' is an experiment's" in result.stderr
    assert result.stderr.count("\n") == 1 and "give the blend its own name" in result.stderr
    assert submission.read_text() == "id,label\nt1,a\n"  # the experiment's submission is untouched
    assert not (project / "data/runs/toy/blend/left").exists()


def test_a_blend_submission_follows_the_sample_column_order(project: Path, capsys) -> None:
    """A sample_submission whose id column is not first: the blend's submission has the sample's order."""
    build(project)
    write_blend(project, "mean")
    raw = project / "data/raw/toy"
    raw.mkdir(parents=True)
    (raw / "sample_submission.csv").write_text("label,id\na,t1\na,t2\n")
    result = run_main(capsys, "blend", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    submission = pd.read_csv(project / "submissions/toy/duo.csv")
    assert list(submission.columns) == ["label", "id"] and list(submission["id"]) == ["t1", "t2"]
    assert list(submission["label"]) == ["a", "b"]  # test rows: t1 leans a, t2 leans b in both members
