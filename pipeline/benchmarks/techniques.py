"""bench-techniques: the winning techniques of issue 14 against the baseline, held-out accuracy at equal epochs.

A Fashion-MNIST competition (pipeline.benchmarks.recipe_bench.materialise: N_TRAIN training images, N_TEST
held-out test images whose labels sit in solution.csv, which init turns into `data.holdout`). Every arm is a full
k-fold experiment of init's baseline.yaml at EPOCHS epochs, run through the pipeline's own stages (train, predict,
ensemble) and scored by ensemble on the held-out labels (scores.json `holdout`) and on OOF (`cv`):

- baseline:  init's baseline.yaml;
- noise, noise2: the baseline with other train.seed values: how far equal recipes land apart (the noise to beat);
- soup:      + train.swa {epochs: 2} (checkpoint soup of the last two epochs);
- refit:     the baseline's folds + one full-data refit (make refit) in the ensemble (ensemble.refit);
- seeds3:    + train.seeds [42, 43, 44] (a 3-seed bag per fold: 3x the training);
- pseudo:    + train.pseudo from the baseline (test rows above 0.9 join every fold's training side);
- distil:    + train.soft_labels from the baseline's OOF (alpha 0.3; its CV is optimistic, holdout is not).

Each stage is its own process with one thread, JOBS at a time (folds of an arm in parallel); a finished arm is
reused on a re-run (delete data/runs/<comp>/tech_<arm>_e<epochs>/ to redo it). Times are per arm: wall seconds
and the CPU seconds of its training processes (CPU time barely moves when other work shares the machine; wall
time does).
Writes data/runs/bench/techniques.json and .md (the table) and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.benchmarks.recipe_bench import arms_parser, env_or, prepare, run_and_print, write_variant
from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv

log = logging.getLogger(__name__)

BASELINE = "baseline"
# name -> (description, change merged into baseline.yaml); arms that read the baseline run after it
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("init's baseline (k folds + its TTA)", {}),
    "noise": ("the baseline again with another training seed (the noise to beat)", {"train": {"seed": 7}}),
    "noise2": ("the baseline with a third training seed (the noise to beat)", {"train": {"seed": 8}}),
    "soup": ("+ checkpoint soup of the last 2 epochs (train.swa)", {"train": {"swa": {"epochs": 2}}}),
    "refit": ("+ a full-data refit in the ensemble (make refit, ensemble.refit)", {}),
    "seeds3": ("3-seed bag per fold (train.seeds, 3x training)", {"train": {"seeds": [42, 43, 44]}}),
    "pseudo": ("+ pseudo-labels from the baseline (threshold 0.9, hard)",
               {"train": {"pseudo": {"from": BASELINE, "threshold": 0.9}}}),
    "distil": ("+ OOF distillation from the baseline (alpha 0.3)",
               {"train": {"soft_labels": {"from": BASELINE, "alpha": 0.3}}}),
}  # fmt: skip


def timed(*args: str) -> float:
    """One `python -m pipeline ...` call with one thread; the CPU seconds it used (its own rusage, os.wait4)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=sink,
                                stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        last = stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"bench-techniques: `pipeline {' '.join(args)}` failed: {last[0]}")
    return usage.ru_utime + usage.ru_stime


def variant(name: str, epochs: int) -> str:
    """An arm's experiment name (configs/<comp>/<variant>.yaml, data/runs/<comp>/<variant>/)."""
    return f"tech_{name}_e{epochs}"


def source(change: dict[str, Any], epochs: int) -> dict[str, Any]:
    """`change` with a `from: baseline` source pointed at the baseline arm's experiment at these epochs."""
    train = {key: {**value, "from": variant(BASELINE, epochs)} if isinstance(value, dict) and "from" in value
             else value for key, value in change.get("train", {}).items()}  # fmt: skip
    return {**change, "train": train} if train else change


def train_and_predict(config: str, folds: list[str], jobs: int) -> float:
    """Train then predict each fold (folds in parallel); the training processes' CPU seconds."""

    def one(fold: str) -> float:
        cpu = timed("train", "--config", config, "--fold", fold)
        timed("predict", "--config", config, "--fold", fold)
        return cpu

    with ThreadPoolExecutor(jobs) as pool:
        return sum(pool.map(one, folds))


def run_arm(comp: str, name: str, epochs: int, n_folds: int, jobs: int) -> dict[str, Any]:
    description, change = ARMS[name]
    result = paths.Paths(comp, variant(name, epochs)).run / "bench.json"
    if result.exists():
        return artifacts.read_json(result)
    started = time.perf_counter()
    if name == "refit":  # the baseline's folds, plus one model on every row, under the baseline's config
        base = variant(BASELINE, epochs)
        config = str(paths.configs_dir(comp) / f"{base}.yaml")
        cpu = timed("train", "--config", config, "--fold", "refit")
        timed("predict", "--config", config, "--fold", "refit")
        timed("ensemble", "--config", config, "--set", "ensemble.refit=true")
        scores = artifacts.read_json(paths.Paths(comp, base).scores)
        timed("ensemble", "--config", config)  # the baseline's own scores.json back
    else:
        config = write_variant(comp, variant(name, epochs), epochs, source(change, epochs))
        cpu = train_and_predict(config, [str(k) for k in range(n_folds)], jobs)
        timed("ensemble", "--config", config)
        scores = artifacts.read_json(paths.Paths(comp, variant(name, epochs)).scores)
    row = {"arm": name, "description": description, "cv": scores.get("cv"), "holdout": scores.get("holdout"),
           "wall_seconds": round(time.perf_counter() - started), "train_cpu_seconds": round(cpu)}  # fmt: skip
    artifacts.write_json(result, row)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r["holdout"] for r in rows if r["arm"] == BASELINE), None)
    lines = [
        "| technique | CV (OOF) | held-out acc. | vs baseline | wall s | train CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        gap = "" if base is None or row["arm"] == BASELINE else f"{row['holdout'] - base:+.4f}"
        cv = "" if row.get("cv") is None else f"{row['cv']:.4f}"
        lines.append(f"| {row['description']} | {cv} | {row['holdout']:.4f} | {gap} | {row['wall_seconds']} | "
                     f"{row['train_cpu_seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    comp = prepare("fashion", args.n_train, args.n_test)
    n_folds = read_csv(paths.Paths(comp).folds_csv, "folds table")["fold"].nunique()
    arms = [BASELINE] + [a for a in args.arms if a != BASELINE]
    rows = []
    for name in arms:  # in order: the arms that read the baseline come after it
        log.info("bench-techniques: %s", name)
        rows.append(run_arm(comp, name, args.epochs, n_folds, args.jobs))
    out = paths.project_root() / "data" / "runs" / "bench"
    facts = {"comp": comp, "n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "folds": n_folds}
    artifacts.write_json(out / "techniques.json", {"rows": rows, **facts})
    artifacts.write_text(out / "techniques.md", table(rows))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = arms_parser("pipeline.benchmarks.techniques", __doc__, list(ARMS), n_train=2000, n_test=2000)
    parser.add_argument("--epochs", type=int, default=int(env_or("EPOCHS", "3")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_and_print(run_benchmark, table, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
