"""bench-imbalance: training choices for skewed classes, held-out accuracy and macro-F1 (Fashion-MNIST made imbalanced).

Data: Fashion-MNIST (Debian's dataset-fashion-mnist) with class shares SHARES (50/20/10/5/4/3/3/2/2/1 %), N_TRAIN
training images drawn from its training split and N_TEST from its official test split re-weighted to the same
shares, materialised as a Kaggle-layout competition (pipeline.benchmarks.recipe_bench.write_raw; solution.csv =
the held-out labels). `init` writes the configs as for a user, then the competition's metric is set to f1_macro
(what a user of an imbalanced competition sets, or what `download` records from Kaggle) and train.image_size to
IMAGE_SIZE (32 px, for time; every arm and the starter alike).

Arms, every one a full k-fold experiment of init's baseline at EPOCHS epochs through the pipeline's own stages
(train, predict with its TTA, ensemble; ensemble fits the per-class offsets of pipeline.inference.prior_shift):

- baseline:        init's baseline (plain cross-entropy, shuffled batches);
- class_weights:   + train.class_weights: balanced;
- sampler:         + train.sampler: balanced;
- logit_adjusted:  + train.loss: logit_adjusted (cross-entropy on logits + log priors);
- focal:           + train.loss: focal (gamma 2);
- starter:         pipeline.benchmarks.starter (one model on fold 0's training rows, no TTA, no offsets).

Every arm reports held-out accuracy and macro-F1 at argmax and under the experiment's own decision (thresholds.json:
the prior shift when nested CV kept it), losers included; `baseline, metric accuracy` re-runs the baseline's
ensemble under metric accuracy (no offsets; what an accuracy competition gets). Each stage is its own process with
one thread, JOBS at a time; a finished fold (or starter) is reused on a re-run, the scoring is always redone.
Writes data/runs/bench/imbalance.json and .md (the table) and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.benchmarks.fashion import CLASSES, read_idx
from pipeline.benchmarks.recipe_bench import arms_parser, cli, env_or, run_and_print, write_raw, write_variant
from pipeline.core import artifacts, paths
from pipeline.core.artifacts import read_json
from pipeline.core.metrics import accuracy, f1_macro
from pipeline.data.tables import read_csv

log = logging.getLogger(__name__)

SHARES = (0.50, 0.20, 0.10, 0.05, 0.04, 0.03, 0.03, 0.02, 0.02, 0.01)  # Fashion-MNIST classes in their own order
SEED = 0
METRIC = "f1_macro"
# 32 px (Fashion-MNIST is 28 px): a quarter of init's 64 px compute, so the six arms' 26 trainings fit ~25 minutes
# of a busy 2-core machine; every arm, the starter included, trains and predicts at this size.
IMAGE_SIZE = 32
STARTER = "starter"
# name -> (description, change merged into baseline.yaml). The baseline states the class-balance keys, so the
# measurement does not depend on what init turned on.
PLAIN = {"class_weights": "none", "sampler": "shuffle", "loss": "auto"}
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("init's baseline: cross-entropy, shuffled", {"train": PLAIN}),
    STARTER: ("starter notebook loop (fold 0's rows, one model, no TTA)", {}),
    "logit_adjusted": ("+ loss: logit_adjusted", {"train": {**PLAIN, "loss": "logit_adjusted"}}),
    "class_weights": ("+ class_weights: balanced", {"train": {**PLAIN, "class_weights": "balanced"}}),
    "sampler": ("+ sampler: balanced", {"train": {**PLAIN, "sampler": "balanced"}}),
    "focal": ("+ loss: focal (gamma 2)", {"train": {**PLAIN, "loss": "focal"}}),
}  # fmt: skip


def skewed_rows(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices with class k's share SHARES[k] of `n` (at least one row each), drawn without replacement."""
    counts = np.maximum(np.round(np.asarray(SHARES) * n).astype(int), 1)
    rows = [rng.choice(np.flatnonzero(labels == k), size=count, replace=False) for k, count in enumerate(counts)]
    return np.sort(np.concatenate(rows))


def prepare(n_train: int, n_test: int) -> str:
    """The imbalanced competition, init'ed, its metric set to f1_macro, folds assigned; returns its slug."""
    rng = np.random.default_rng(SEED)
    x_train, y_train = read_idx("train")
    x_test, y_test = read_idx("t10k")
    train_rows, test_rows = skewed_rows(y_train, n_train, rng), skewed_rows(y_test, n_test, rng)
    comp = f"bench-imbalanced-{len(train_rows)}-{len(test_rows)}"
    write_raw(comp, "fashion-imbalanced", (x_train, y_train, train_rows), (x_test, y_test, test_rows), CLASSES)
    competition = paths.configs_dir(comp) / "competition.yaml"
    if not (paths.configs_dir(comp) / "baseline.yaml").exists():
        cli("init", "--comp", comp)
    values = yaml.safe_load(competition.read_text())
    if values.get("metric") != METRIC:
        artifacts.write_text(competition, yaml.safe_dump({**values, "metric": METRIC}, sort_keys=False))
    baseline = paths.configs_dir(comp) / "baseline.yaml"
    values = yaml.safe_load(baseline.read_text())
    if values["train"].get("image_size") != IMAGE_SIZE:  # every arm and the starter read it from here
        values["train"]["image_size"] = IMAGE_SIZE
        artifacts.write_text(baseline, yaml.safe_dump(values, sort_keys=False))
    if not paths.Paths(comp).folds_csv.exists():
        cli("folds", "--config", str(paths.configs_dir(comp) / "baseline.yaml"))
    return comp


def variant(name: str, epochs: int) -> str:
    return f"imb_{name}_e{epochs}"


def train_arm(comp: str, name: str, epochs: int, n_folds: int, jobs: int) -> None:
    """Train and predict every fold of an arm (skipping finished folds), or the starter once."""
    if name == STARTER:
        run = paths.Paths(comp, variant(name, epochs)).run
        if not (run / "bench.json").exists():
            cli("--comp", comp, "--epochs", str(epochs), "--out", str(run / "bench.json"), "--probs",
                str(run / "test.csv"), module="pipeline.benchmarks.starter")  # fmt: skip
        return
    config = write_variant(comp, variant(name, epochs), epochs, ARMS[name][1])
    out = paths.Paths(comp, variant(name, epochs))

    def one(fold: int) -> None:
        if not out.test_probs(fold).exists():
            cli("train", "--config", config, "--fold", str(fold))
            cli("predict", "--config", config, "--fold", str(fold))

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, range(n_folds)))


def held_out(comp: str, probs: pd.DataFrame, thresholds: dict[str, Any] | None) -> dict[str, float]:
    """Accuracy and macro-F1 on solution.csv, at argmax and under the decision (prior shift) when there is one."""
    from pipeline.inference.prior_shift import decide

    truth = read_csv(paths.raw_dir(comp) / "solution.csv", "solution").set_index("id")["label"]
    classes = [c for c in probs.columns if c != "id"]  # the run's own order (data.classes): the offsets follow it
    targets = np.array([classes.index(c) for c in truth.loc[probs["id"]]])
    matrix = probs[classes].astype(float).to_numpy()
    decided = decide(matrix, thresholds)
    recalls = [np.mean(decided[targets == k].argmax(axis=1) == k) for k in range(len(classes))]
    return {"accuracy": accuracy(targets, matrix), "f1_macro": f1_macro(targets, matrix),
            "accuracy_decided": accuracy(targets, decided), "f1_macro_decided": f1_macro(targets, decided),
            "min_recall": float(min(recalls))}  # fmt: skip


def score_arm(comp: str, name: str, epochs: int, metric: str = METRIC) -> dict[str, Any]:
    """Ensemble the arm's folds under `metric` and score its test blend on the held-out labels."""
    out = paths.Paths(comp, variant(name, epochs))
    if name == STARTER:
        return {"arm": name, "metric": "", **held_out(comp, read_csv(out.run / "test.csv", "starter"), None)}
    config = str(paths.configs_dir(comp) / f"{variant(name, epochs)}.yaml")
    cli("ensemble", "--config", config, *(["--set", f"metric={metric}"] if metric != METRIC else []))
    scores, thresholds = read_json(out.scores), read_json(out.thresholds)
    row = {"arm": name, "metric": metric, "cv": scores["cv"], "cv_decided": scores.get("cv_thresholded"),
           "decision": thresholds["kind"], "nested_gain": thresholds.get("gain"),
           "ensemble_vs_folds": scores.get("ensemble_vs_folds")}  # fmt: skip
    return {**row, **held_out(comp, read_csv(out.test_blend, "test blend"), thresholds)}


def table(rows: list[dict[str, Any]]) -> str:
    """One row per arm and epoch budget; "vs starter" compares with the starter trained for the same epochs."""
    starters = {r.get("epochs"): r for r in rows if r["arm"] == STARTER}
    lines = ["| epochs | arm | metric | decision | held-out acc. | macro-F1 (argmax) | macro-F1 (decided) | "
             "acc. (decided) | min class recall | macro-F1 vs starter |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        start = starters.get(r.get("epochs"))
        gap = "" if start is None or r is start else f"{100 * (r['f1_macro_decided'] - start['f1_macro']):+.1f} pts"
        lines.append(f"| {r.get('epochs', '-')} | {ARMS[r['arm']][0]} | {r['metric'] or '-'} | "
                     f"{r.get('decision', '-')} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | "
                     f"{r['f1_macro_decided']:.4f} | {r['accuracy_decided']:.4f} | {r['min_recall']:.3f} | "
                     f"{gap} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every arm trained then scored in turn; the table is rewritten after each, so a stopped run still reports."""
    comp = prepare(args.n_train, args.n_test)
    n_folds = read_csv(paths.Paths(comp).folds_csv, "folds table")["fold"].nunique()
    out = paths.project_root() / "data" / "runs" / "bench"
    facts = {"comp": comp, "n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "folds": n_folds,
             "shares": SHARES}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for epochs in args.epochs:
        for name in args.arms:
            log.info("bench-imbalance: %s, %d epochs", name, epochs)
            started = time.perf_counter()
            train_arm(comp, name, epochs, n_folds, args.jobs)
            rows.append({**score_arm(comp, name, epochs), "epochs": epochs,
                         "wall_seconds": round(time.perf_counter() - started)})  # fmt: skip
            if name == "baseline":  # what a competition scored by accuracy gets from the same models: no offsets
                rows.append({**score_arm(comp, name, epochs, metric="accuracy"), "epochs": epochs})
                score_arm(comp, name, epochs)  # the baseline's own (f1_macro) scores.json back
            artifacts.write_json(out / "imbalance.json", {"rows": rows, **facts})
            artifacts.write_text(out / "imbalance.md", table(rows))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = arms_parser("pipeline.benchmarks.imbalance", __doc__, list(ARMS), n_train=600, n_test=1000)
    parser.add_argument("--epochs", nargs="+", type=int, default=[int(e) for e in env_or("EPOCHS", "3").split()])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_and_print(run_benchmark, table, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
