"""bench-recipe: the default recipe against a plain "starter notebook" loop, held-out accuracy at equal epochs.

Datasets (both install offline): Fashion-MNIST from Debian's `dataset-fashion-mnist` (N_TRAIN images of its
training set, N_TEST of its official test set) and OpenCV's handwritten digits (Debian `opencv-doc`'s digits.png,
5,000 20 px digits; scikit-learn's 8x8 digits when it is missing), each materialised as a Kaggle-layout
competition under data/raw/<comp>/ (train.csv, train/, test/, sample_submission.csv, solution.csv = held-out
labels). `init` writes the configs exactly as for a user (64 px, Lite0, the offline ImageNet weights), `folds`
the split. Every row trains on fold 0's training rows and is scored on the held-out test images:

- reference: pipeline.benchmarks.starter (PIL resize, flip, mild jitter, AdamW 1e-3, cosine, no warmup/EMA/TTA);
- default: init's baseline.yaml at the same epochs (single fold, no TTA, then with its TTA views);
- ablations (--ablate): the default with one change, at the first epoch count;
- default_5fold: the default's 5 folds + TTA at the first epoch count (--five-fold).

Each job is its own process with one thread, JOBS at a time; finished jobs are reused on a re-run (delete
data/runs/<comp>/ to redo). Sizes: flags or BENCH_* environment variables (`make bench-recipe BENCH_QUICK=1`).
Writes data/runs/bench/recipe_bench.json and .md (the table) and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from sklearn.model_selection import train_test_split

from pipeline.benchmarks.coverage_variants import COVERAGE_VARIANTS
from pipeline.benchmarks.fashion import CLASSES as FASHION_CLASSES
from pipeline.benchmarks.fashion import read_idx
from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv

log = logging.getLogger(__name__)

DIGITS_PNG = Path("/usr/share/doc/opencv-doc/examples/data/digits.png")
SEED = 0
# One change each against init's baseline (merged into baseline.yaml); every row is reported, losers included.
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "old_default": ("previous baseline: timm head, warmup 1 epoch, crop 0.5, jitter 0.2, EMA 0.999, keep best",
                    {"train": {"warmup_epochs": 1.0, "ema_decay": 0.999, "keep": "best", "head_init_scale": 1.0},
                     "augment": {"scale_min": 0.5, "color_jitter": 0.2}}),
    "warmup_1ep": ("warmup 1 epoch (instead of the budget's fraction)", {"train": {"warmup_epochs": 1.0}}),
    "warmup_0": ("no warmup", {"train": {"warmup_epochs": 0.0}}),
    "crop_0.5": ("crop scale 0.5-1", {"augment": {"scale_min": 0.5}}),
    "crop_1.0": ("no random crop (scale 1, ratio 1)", {"augment": {"scale_min": 1.0, "ratio_range": 0.0}}),
    "ratio_0": ("crop aspect ratio fixed at 1", {"augment": {"ratio_range": 0.0}}),
    "jitter_0": ("no colour jitter", {"augment": {"color_jitter": 0.0}}),
    "jitter_0.4": ("colour jitter 0.4", {"augment": {"color_jitter": 0.4}}),
    "rotate_10": ("+ rotation 10 degrees", {"augment": {"rotate": 10.0}}),
    "wd_0.01": ("weight decay 0.01", {"train": {"weight_decay": 0.01}}),
    "wd_0.1": ("weight decay 0.1", {"train": {"weight_decay": 0.1}}),
    "lr_3e-3": ("lr 3e-3", {"train": {"lr": 3.0e-3}}),
    "lr_auto": ("lr auto (lr-find's suggestion)", {"train": {"lr": "auto"}}),
    "head_timm": ("timm's head init (no rescaling)", {"train": {"head_init_scale": 1.0}}),
    "head_zero": ("zero head init", {"train": {"head_init_scale": 0.0}}),
    "bn_frozen": ("BatchNorm statistics frozen (eval-mode BN)", {"train": {"freeze_bn": True}}),
    "ema_off": ("no EMA", {"train": {"ema": False}}),
    "ema_0.999": ("EMA decay 0.999 (instead of the budget's)", {"train": {"ema_decay": 0.999}}),
    "smooth_0.1": ("label smoothing 0.1", {"train": {"label_smoothing": 0.1}}),
    "keep_best": ("keep the best epoch (selected on the scored fold)", {"train": {"keep": "best"}}),
}  # fmt: skip
ABLATIONS.update(COVERAGE_VARIANTS)  # augmentation policies and drop-path (pipeline.benchmarks.coverage_variants)


def env_or(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


# --- datasets -----------------------------------------------------------------------------------------------


def fashion_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    x_train, y_train = read_idx("train")
    x_test, y_test = read_idx("t10k")
    return x_train, y_train, x_test, y_test, FASHION_CLASSES


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """OpenCV's digits.png (50 rows x 100 columns of 20 px digits, 5 rows per class), split 60/40 stratified."""
    if DIGITS_PNG.exists():
        sheet = np.asarray(Image.open(DIGITS_PNG).convert("L"))
        cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
        labels = np.repeat(np.arange(10), 500)
    else:  # scikit-learn's bundled 8x8 digits (0..16 grey levels)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        cells, labels = (bunch.images * 255 / 16).astype(np.uint8), bunch.target
    rows = np.arange(len(labels))
    train, test = train_test_split(rows, test_size=0.4, stratify=labels, random_state=SEED)
    return cells[train], labels[train], cells[test], labels[test], [str(k) for k in range(10)]


DATASETS = {"fashion": fashion_arrays, "digits": digits_arrays}


def _take(labels: np.ndarray, n: int) -> np.ndarray:
    if n >= len(labels):
        return np.arange(len(labels))
    rows, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=SEED)
    return np.sort(rows)


def materialise(dataset: str, n_train: int, n_test: int) -> str:
    """data/raw/<comp>/ in Kaggle's layout; returns the competition slug (sizes in the name)."""
    x_train, y_train, x_test, y_test, classes = DATASETS[dataset]()
    train_rows, test_rows = _take(y_train, n_train), _take(y_test, n_test)
    comp = f"bench-{dataset}-{len(train_rows)}-{len(test_rows)}"
    write_raw(comp, dataset, (x_train, y_train, train_rows), (x_test, y_test, test_rows), classes)
    return comp


def write_raw(comp: str, dataset: str, train: tuple, test: tuple, classes: list[str]) -> None:
    """data/raw/<comp>/ from (images, labels, rows taken) of each split; kept when its .complete stamp exists."""
    (x_train, y_train, train_rows), (x_test, y_test, test_rows) = train, test
    raw = paths.raw_dir(comp)
    if (raw / ".complete").exists():
        return
    staging = raw.with_name(f".{raw.name}.staging")
    for folder, images, labels, rows in (("train", x_train, y_train, train_rows), ("test", x_test, y_test, test_rows)):
        (staging / folder).mkdir(parents=True, exist_ok=True)
        ids = [f"{folder}_{i:05d}" for i in rows]
        for image_id, i in zip(ids, rows, strict=True):
            Image.fromarray(images[i]).save(staging / folder / f"{image_id}.png")
        names = [classes[k] for k in labels[rows]]
        if folder == "train":
            pd.DataFrame({"id": ids, "label": names}).to_csv(staging / "train.csv", index=False)
        else:
            pd.DataFrame({"id": ids, "label": classes[0]}).to_csv(staging / "sample_submission.csv", index=False)
            pd.DataFrame({"id": ids, "label": names}).to_csv(staging / "solution.csv", index=False)
    if raw.exists():
        raise UserError(f"{raw} exists without its .complete stamp; delete it and re-run")
    raw.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(raw)
    artifacts.write_text(raw / ".complete", f"{dataset}: {len(train_rows)} train, {len(test_rows)} test\n")


# --- jobs ---------------------------------------------------------------------------------------------------


def cli(*args: str, module: str = "pipeline") -> None:
    """One `python -m pipeline ...` call with one thread; a failure stops the benchmark with its last line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"bench-recipe: `{module} {' '.join(args)}` failed: {result.stderr.strip().splitlines()[-1:]}")


def write_variant(comp: str, name: str, epochs: int, change: dict[str, Any]) -> str:
    """configs/<comp>/<name>.yaml: init's baseline.yaml + `change`, at `epochs`, CPU, no loader workers."""
    baseline = yaml.safe_load((paths.configs_dir(comp) / "baseline.yaml").read_text())
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in baseline.items()}
    for key, value in change.items():
        merged[key] = {**merged.get(key, {}), **value}
    merged["train"] = {**merged["train"], "epochs": epochs, "num_workers": 0}
    merged["device"] = "cpu"
    path = paths.configs_dir(comp) / f"{name}.yaml"
    artifacts.write_text(path, yaml.safe_dump(merged, sort_keys=False))
    return str(path)


def holdout_accuracy(comp: str, probs: pd.DataFrame) -> float:
    truth = read_csv(paths.raw_dir(comp) / "solution.csv", "solution").set_index("id")["label"]
    classes = [c for c in probs.columns if c != "id"]
    predicted = np.array(classes)[probs[classes].astype(float).to_numpy().argmax(axis=1)]
    return float(np.mean(predicted == truth.loc[probs["id"]].astype(str).to_numpy()))


def pipeline_job(comp: str, name: str, epochs: int, change: dict[str, Any], fold: int = 0) -> dict[str, Any]:
    """Train + predict one fold of a variant; held-out accuracy without TTA and with the baseline's views."""
    result_path = paths.Paths(comp, name).fold_dir(fold) / "bench.json"
    if result_path.exists():
        return artifacts.read_json(result_path)
    config = write_variant(comp, name, epochs, change)
    started = time.perf_counter()
    cli("train", "--config", config, "--fold", str(fold))
    seconds = time.perf_counter() - started
    out = paths.Paths(comp, name)
    cli("predict", "--config", config, "--fold", str(fold), "--set", "tta.views=[identity]")
    plain = holdout_accuracy(comp, read_csv(out.test_probs(fold), "test probabilities"))
    cli("predict", "--config", config, "--fold", str(fold))  # the config's own TTA views
    tta = holdout_accuracy(comp, read_csv(out.test_probs(fold), "test probabilities"))
    train_log = pd.read_csv(out.train_log(fold))
    row = {"holdout": plain, "holdout_tta": tta, "first_loss": float(train_log["train_loss"].iloc[0]),
           "train_seconds": round(seconds)}  # fmt: skip
    artifacts.write_json(result_path, row)
    return row


def starter_job(comp: str, epochs: int) -> dict[str, Any]:
    result_path = paths.Paths(comp, f"starter_e{epochs}").run / "bench.json"
    if not result_path.exists():
        cli("--comp", comp, "--epochs", str(epochs), "--out", str(result_path), module="pipeline.benchmarks.starter")
    return artifacts.read_json(result_path)


def five_fold_job(comp: str, epochs: int) -> dict[str, Any]:
    name = f"default_e{epochs}"
    for fold in range(1, 5):
        pipeline_job(comp, name, epochs, {}, fold)
    config = str(paths.configs_dir(comp) / f"{name}.yaml")
    cli("ensemble", "--config", config)
    scores = artifacts.read_json(paths.Paths(comp, name).scores)
    return {"holdout": scores["holdout"], "cv": scores["cv"]}


# --- the benchmark ------------------------------------------------------------------------------------------


def prepare(dataset: str, n_train: int, n_test: int) -> str:
    comp = materialise(dataset, n_train, n_test)
    if not (paths.configs_dir(comp) / "baseline.yaml").exists():
        cli("init", "--comp", comp)
    config = paths.configs_dir(comp) / "baseline.yaml"
    if not paths.Paths(comp).folds_csv.exists():
        cli("folds", "--config", str(config))
    return comp


def plan(args: argparse.Namespace) -> list[tuple[str, tuple]]:
    """(row key, job) pairs: the reference and the default at each epoch count, ablations, the 5-fold rows."""
    jobs: list[tuple[str, tuple]] = []
    first = args.epochs[0]
    for dataset, comp in args.comps.items():
        for epochs in args.epochs:
            jobs.append((f"{dataset}|{epochs}|reference", (starter_job, comp, epochs)))
            jobs.append((f"{dataset}|{epochs}|default", (pipeline_job, comp, f"default_e{epochs}", epochs, {})))
        if dataset == args.datasets[0]:
            for name in args.ablate:
                change = ABLATIONS[name][1]
                jobs.append((f"{dataset}|{first}|{name}", (pipeline_job, comp, f"{name}_e{first}", first, change)))
        if args.five_fold:
            jobs.append((f"{dataset}|{first}|default_5fold", (five_fold_job, comp, first)))
    return jobs


def describe(variant: str) -> str:
    fixed = {"reference": "starter notebook (reference)", "default": "default (init's baseline)",
             "default_5fold": "default, 5 folds + TTA"}  # fmt: skip
    return fixed.get(variant) or f"default, {ABLATIONS[variant][0]}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | epochs | recipe | held-out acc. | + TTA | vs reference | epoch-1 loss | train s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        tta, gap, loss = row.get("holdout_tta"), row.get("vs_reference"), row.get("first_loss")
        lines.append(
            f"| {row['dataset']} | {row['epochs']} | {describe(row['variant'])} | {row['holdout']:.4f} | "
            f"{'' if tta is None else f'{tta:.4f}'} | {'' if gap is None else f'{gap:+.4f}'} | "
            f"{'' if loss is None else f'{loss:.3f}'} | {row.get('train_seconds', '')} |"
        )
    return "\n".join(lines) + "\n"


def finished(job: tuple) -> bool:
    """Whether a job's result is already on disk (a re-run reuses it)."""
    fn, comp, *rest = job
    if fn is starter_job:
        return (paths.Paths(comp, f"starter_e{rest[0]}").run / "bench.json").exists()
    if fn is five_fold_job:
        return paths.Paths(comp, f"default_e{rest[0]}").scores.exists()
    fold = rest[3] if len(rest) > 3 else 0
    return (paths.Paths(comp, rest[0]).fold_dir(fold) / "bench.json").exists()


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.comps = {d: prepare(d, args.n_train, args.n_test) for d in args.datasets}
    jobs = plan(args)
    if args.finished_only:  # the table of what has run so far, training nothing
        jobs = [(k, j) for k, j in jobs if finished(j)]
    parallel = [(k, j) for k, j in jobs if j[0] is not five_fold_job]
    with ThreadPoolExecutor(args.jobs) as pool:  # each job is its own process; the pool only waits on them
        results = dict(zip([k for k, _ in parallel], pool.map(lambda kj: kj[1][0](*kj[1][1:]), parallel), strict=True))
        five = [(k, j) for k, j in jobs if j[0] is five_fold_job]
        results.update(zip([k for k, _ in five], pool.map(lambda kj: kj[1][0](*kj[1][1:]), five), strict=True))
    rows = []
    for key, _ in jobs:
        dataset, epochs, variant = key.split("|")
        reference = results.get(f"{dataset}|{epochs}|reference", {}).get("holdout")
        row = {"dataset": dataset, "epochs": int(epochs), "variant": variant, **results[key]}
        if variant != "reference" and reference is not None:
            row["vs_reference"] = row.get("holdout_tta", row["holdout"]) - reference
        rows.append(row)
    out = paths.project_root() / "data" / "runs" / "bench"
    facts = {"n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "comps": args.comps}
    artifacts.write_json(out / "recipe_bench.json", {"rows": rows, **facts})
    artifacts.write_text(out / "recipe_bench.md", table(rows))
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    quick = env_or("QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.benchmarks.recipe_bench", description=__doc__.splitlines()[0]
    )
    datasets = env_or("DATASETS", "fashion" if quick else "fashion digits").split()
    parser.add_argument("--datasets", nargs="+", default=datasets, choices=list(DATASETS))
    parser.add_argument(
        "--epochs", nargs="+", type=int, default=[int(e) for e in env_or("EPOCHS", "3" if quick else "3 5 10").split()]
    )
    parser.add_argument("--n-train", type=int, default=int(env_or("N_TRAIN", "3000")))
    parser.add_argument("--n-test", type=int, default=int(env_or("N_TEST", "1000" if quick else "2000")))
    parser.add_argument("--jobs", type=int, default=int(env_or("JOBS", "2")), help="processes at once, 1 thread each")
    parser.add_argument("--ablate", nargs="*", default=env_or("ABLATE", "").split(), choices=list(ABLATIONS))
    parser.add_argument("--five-fold", action=argparse.BooleanOptionalAction, default=not quick)
    parser.add_argument("--finished-only", action="store_true", help="tabulate the finished jobs; train nothing")
    return parser.parse_args(argv)


def arms_parser(module: str, doc: str, arms: list[str], n_train: int, n_test: int) -> argparse.ArgumentParser:
    """The flags every arm benchmark shares (each also reads BENCH_<NAME> from the environment); the caller adds
    its own --epochs."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=env_or("ARMS", " ".join(arms)).split(), choices=arms)
    parser.add_argument("--n-train", type=int, default=int(env_or("N_TRAIN", str(n_train))))
    parser.add_argument("--n-test", type=int, default=int(env_or("N_TEST", str(n_test))))
    parser.add_argument("--jobs", type=int, default=int(env_or("JOBS", "2")), help="processes at once, 1 thread each")
    return parser


def run_and_print(run: Callable[[argparse.Namespace], list[dict[str, Any]]],
                  tabulate: Callable[[list[dict[str, Any]]], str], args: argparse.Namespace) -> int:  # fmt: skip
    """A benchmark's main: run it, print its table; a UserError is one `error:` line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(tabulate(rows), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_and_print(run_benchmark, table, parse(argv))


if __name__ == "__main__":
    sys.exit(main())
