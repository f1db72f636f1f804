"""bench-recipe: measure the training recipe on Fashion-MNIST, held-out accuracy at equal epochs.

Materialises data/raw/fashion-bench/ from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist,
`apt-get install dataset-fashion-mnist`): a stratified sample of N_TRAIN images of the 60k training set as the
competition's train.csv + train/<id>.png, N_TEST of the 10k test set as test/<id>.png with sample_submission.csv
and solution.csv (the held-out labels). Then `init` infers its configs, and each variant of the recipe is
written as configs/fashion-bench/<variant>.yaml and run through the ordinary CLI stages (folds, lr-find, train,
predict, ensemble), JOBS processes at a time with one thread each. Every variant trains fold 0 for the same
number of epochs and is scored on the held-out test images; the 5-fold row trains the reference's other folds.
Writes data/runs/fashion-bench/recipe_benchmark.json and .md (the table) and prints the table.

Sized for a shared 2-core CPU (about 30 minutes): 6,000 train / 2,000 test images at 32 px, 3 epochs,
batch 64, the offline Lite0 ImageNet weights (`python -m pipeline weights`).
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from sklearn.model_selection import train_test_split

from pipeline import artifacts, paths
from pipeline.benchmarks.coverage_variants import COVERAGE_VARIANTS
from pipeline.data import read_csv
from pipeline.errors import UserError

SOURCE = Path("/usr/share/datasets/fashion-mnist")
COMP = "fashion-bench"
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
N_TRAIN, N_TEST, SEED = 6000, 2000, 0
EPOCHS, IMAGE_SIZE, BATCH = 3, 32, 64

LITE0 = "data/weights/tf_efficientnet_lite0.safetensors"
REFERENCE: dict[str, Any] = {  # plain fine-tuning of the ImageNet weights; each variant changes one thing
    "model": {"name": "tf_efficientnet_lite0", "pretrained": LITE0},
    "train": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 1.0e-3, "image_size": IMAGE_SIZE, "num_workers": 0,
              "warmup_epochs": 0.5},
    "augment": {"scale_min": 0.7, "color_jitter": 0.0},
    "tta": {"views": ["identity"]},
    "device": "cpu",
}  # fmt: skip
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "random_init": ("random init (no pretrained weights)", {"model": {"pretrained": False}}),
    "reference": ("Lite0 ImageNet weights, plain fine-tuning (reference)", {}),
    "fine_tune": ("+ freeze 1 epoch, then backbone LR x0.1, layer decay 0.8",
                  {"train": {"freeze_epochs": 1, "backbone_lr_factor": 0.1, "layer_decay": 0.8}}),
    "fine_tune_mild": ("+ freeze 1 epoch, then backbone LR x0.5",
                       {"train": {"freeze_epochs": 1, "backbone_lr_factor": 0.5}}),
    "fine_tune_head10x": ("+ freeze 1 epoch, head LR x10 (1e-2), backbone LR x0.1 (= the reference's 1e-3)",
                          {"train": {"lr": 1.0e-2, "freeze_epochs": 1, "backbone_lr_factor": 0.1}}),
    "ema": ("+ EMA of weights (decay 0.999, timm warmup)", {"train": {"ema": True}}),
    "mixup": ("+ mixup (alpha 0.2)", {"train": {"mixup": 0.2}}),
    "chosen": ("init's baseline recipe: reference + EMA + TTA (identity, hflip)",
               {"train": {"ema": True}, "tta": {"views": ["identity", "hflip"]}}),
}  # fmt: skip
VARIANTS.update(COVERAGE_VARIANTS)  # augmentation policies and drop-path (pipeline.benchmarks.coverage_variants)
FIVE_FOLDS = ("reference", "chosen")  # also trained on folds 1-4 for the ensemble rows


def read_idx(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,)) of the `train` or `t10k` split."""
    try:
        with gzip.open(SOURCE / f"{kind}-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        with gzip.open(SOURCE / f"{kind}-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(len(labels), 28, 28)
    except FileNotFoundError as exc:
        raise UserError(f"{SOURCE} not found: `apt-get install -y dataset-fashion-mnist` first") from exc
    return images, labels


def _stratified(labels: np.ndarray, n: int) -> np.ndarray:
    rows, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=SEED)
    return np.sort(rows)


def materialise(raw: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """data/raw/fashion-bench/ in Kaggle's layout (train.csv, train/, test/, sample_submission.csv, solution.csv)."""
    if (raw / ".complete").exists():
        return raw
    staging = raw.with_name(f".{raw.name}.staging")
    for kind, folder, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        images, labels = read_idx(kind)
        rows = _stratified(labels, n)
        ids = [f"{folder}_{i:05d}" for i in rows]
        (staging / folder).mkdir(parents=True, exist_ok=True)
        for image_id, i in zip(ids, rows, strict=True):
            Image.fromarray(images[i], mode="L").save(staging / folder / f"{image_id}.png")
        names = [CLASSES[label] for label in labels[rows]]
        if folder == "train":
            pd.DataFrame({"id": ids, "label": names}).to_csv(staging / "train.csv", index=False)
        else:
            pd.DataFrame({"id": ids, "label": CLASSES[0]}).to_csv(staging / "sample_submission.csv", index=False)
            pd.DataFrame({"id": ids, "label": names}).to_csv(staging / "solution.csv", index=False)
    raw.parent.mkdir(parents=True, exist_ok=True)
    if raw.exists():
        raise UserError(f"{raw} exists without its .complete stamp; delete it and re-run")
    staging.rename(raw)
    artifacts.write_text(raw / ".complete", f"dataset-fashion-mnist: {n_train} train, {n_test} test, seed {SEED}\n")
    return raw


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in change.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def write_variant(name: str, change: dict[str, Any]) -> Path:
    path = paths.configs_dir(COMP) / f"{name}.yaml"
    artifacts.write_text(path, yaml.safe_dump(_merge(REFERENCE, change), sort_keys=False))
    return path


def cli(*args: str) -> float:
    """One `python -m pipeline ...` stage with one thread; its wall time. A failure stops the benchmark."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"bench-recipe: `pipeline {' '.join(args)}` failed: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


def holdout_accuracy(probs_csv: Path) -> float:
    truth = read_csv(paths.raw_dir(COMP) / "solution.csv", "solution").set_index("id")["label"]
    probs = read_csv(probs_csv, "probabilities").set_index("id")
    predicted = probs[CLASSES].astype(float).to_numpy().argmax(axis=1)
    return float(np.mean(np.array(CLASSES)[predicted] == truth.loc[probs.index].to_numpy()))


def kept_column(log: pd.DataFrame) -> str:
    """The validation column of the weights train kept at the last epoch (the EMA's or the raw ones)."""
    return "valid_accuracy_ema" if "candidate" in log and log["candidate"].iloc[-1] == "ema" else "valid_accuracy"


def variant_row(name: str) -> dict[str, Any]:
    """Fold 0 of a variant, scored on the held-out test images with the variant's own TTA views."""
    out = paths.Paths(COMP, name)
    log = pd.read_csv(out.train_log(0))
    views = _merge(REFERENCE, VARIANTS[name][1])["tta"]["views"]
    return {"variant": name, "what": VARIANTS[name][0], "folds": 1, "tta": "+".join(views),
            "holdout_accuracy": holdout_accuracy(out.test_probs(0)),
            "valid_accuracy": float(log.iloc[-1][kept_column(log)]),
            "train_seconds": float(log["seconds"].sum())}  # fmt: skip


def ensemble_row(name: str, config: str, *extra: str) -> dict[str, Any]:
    cli("ensemble", "--config", config, *extra)
    scores = artifacts.read_json(paths.Paths(COMP, name).scores)
    return {"variant": f"{name}_5fold", "what": f"{name}, 5-fold ensemble (mean of fold probabilities)",
            "folds": 5, "tta": "+".join(scores["tta_views"]), "holdout_accuracy": scores["holdout"],
            "cv": scores["cv"]}  # fmt: skip


def run_benchmark(jobs: int, variants: list[str]) -> list[dict[str, Any]]:
    materialise(paths.raw_dir(COMP))
    if not (paths.configs_dir(COMP) / "competition.yaml").exists():
        cli("init", "--comp", COMP)
    configs = {name: str(write_variant(name, VARIANTS[name][1])) for name in variants}
    cli("folds", "--config", next(iter(configs.values())))
    started = time.perf_counter()
    suggestion = None
    if "reference" in configs:
        cli("lr-find", "--config", configs["reference"])
        suggestion = artifacts.read_json(paths.Paths(COMP, "reference").lr_find_json)["suggested_lr"]
    train_jobs = [(configs[name], 0) for name in configs]
    train_jobs += [(configs[name], k) for name in configs if name in FIVE_FOLDS for k in range(1, 5)]
    with ThreadPoolExecutor(jobs) as pool:  # each job is its own process: the pool only waits on them
        seconds = list(pool.map(lambda job: cli("train", "--config", job[0], "--fold", str(job[1])), train_jobs))
        list(pool.map(lambda job: cli("predict", "--config", job[0], "--fold", str(job[1])), train_jobs))
    rows = [variant_row(name) for name in configs]
    if "reference" in configs:
        reference = configs["reference"]
        cli("predict", "--config", reference, "--fold", "0", "--set", "tta.views=[identity,hflip]")
        accuracy = holdout_accuracy(paths.Paths(COMP, "reference").test_probs(0))
        rows.append({"variant": "reference_tta", "what": "reference + TTA (identity, hflip)", "folds": 1,
                     "tta": "identity+hflip", "holdout_accuracy": accuracy})  # fmt: skip
    rows += [ensemble_row(name, configs[name]) for name in configs if name in FIVE_FOLDS]
    if "reference" in configs:  # the 5-fold reference with TTA too, then back to its own views
        tta = ("--set", "tta.views=[identity,hflip]")
        for fold in range(5):
            cli("predict", "--config", configs["reference"], "--fold", str(fold), *tta)
        row = ensemble_row("reference", configs["reference"], *tta)
        rows.append({**row, "variant": "reference_5fold_tta", "what": "reference, 5-fold ensemble + TTA"})
        for fold in range(5):
            cli("predict", "--config", configs["reference"], "--fold", str(fold))
        cli("ensemble", "--config", configs["reference"])
    walls = {f"{Path(c).stem}/fold{k}": round(s) for (c, k), s in zip(train_jobs, seconds, strict=True)}
    settings = {"n_train": N_TRAIN, "n_test": N_TEST, "epochs": EPOCHS, "image_size": IMAGE_SIZE, "batch_size": BATCH,
                "jobs": jobs, "train_wall_seconds": walls}  # fmt: skip
    minutes = round((time.perf_counter() - started) / 60, 1)
    return save_results(rows, {"lr_find_suggestion": suggestion, "minutes": minutes, "settings": settings})


def save_results(rows: list[dict[str, Any]], facts: dict[str, Any]) -> list[dict[str, Any]]:
    """recipe_benchmark.json and .md; a run of some variants (--only) replaces their rows and keeps the others."""
    run_dir = paths.project_root() / "data" / "runs" / COMP
    path = run_dir / "recipe_benchmark.json"
    if path.exists():
        previous = artifacts.read_json(path)
        done = {row["variant"] for row in rows}
        rows = [row for row in previous["rows"] if row["variant"] not in done] + rows
        facts = {**facts, "lr_find_suggestion": facts["lr_find_suggestion"] or previous.get("lr_find_suggestion")}
    order = [*VARIANTS, "reference_tta", "reference_5fold", "reference_5fold_tta", "chosen_5fold"]
    rows.sort(key=lambda row: order.index(row["variant"]))
    artifacts.write_json(path, {"rows": rows, **facts})
    artifacts.write_text(run_dir / "recipe_benchmark.md", table(rows))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | folds | TTA | held-out accuracy | fold-0 valid accuracy |", "|---|---|---|---|---|"]
    for row in rows:
        valid = f"{row['valid_accuracy']:.4f}" if "valid_accuracy" in row else ""
        lines.append(f"| {row['what']} | {row['folds']} | {row['tta']} | {row['holdout_accuracy']:.4f} | {valid} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmarks.fashion", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="stages run at once, one CPU thread each")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="variants to run")
    args = parser.parse_args(argv)
    try:
        rows = run_benchmark(args.jobs, args.only)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
