"""init: inspect a competition's raw files and write its configs.

Reads data/raw/<comp>/ (or the Kernel's mount, /kaggle/input/competitions/<comp>), and the metric `download`
recorded from Kaggle in its .complete stamp (pipeline.data.competition_metric); writes
configs/<comp>/competition.yaml (the data layout, metric and folds pipeline.data.layout inferred) and
configs/<comp>/baseline.yaml (a first experiment that runs here, offline included), and prints what it inferred,
the metric and where it came from, and the class shares, with a warning when they are skewed
(pipeline.data.class_balance).
Where it can't decide it stops with `error:` naming the key to set by hand. Existing configs are never overwritten
(--force to redo).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.config import DataConfig, dump_yaml, load_config
from pipeline.core.errors import UserError
from pipeline.data.class_balance import class_shares, imbalance_notes, imbalance_recipe
from pipeline.data.competition_metric import choose_metric
from pipeline.data.layout import infer_data, typical_image_size
from pipeline.data.raw_data import adopt
from pipeline.training.weights import hub_reachable, prepare_lite0

log = logging.getLogger(__name__)

BASELINE_MODEL = "tf_efficientnet_lite0"


def choose_weights(model_name: str) -> bool | str:
    """true when the hub is reachable or cached; else a local file (prepared offline for Lite0); else error."""
    for ext in (".safetensors", ".pth", ".bin"):
        local = paths.weights_dir() / f"{model_name}{ext}"
        if local.exists():
            return _relative(local)
    if hub_reachable():
        return True
    if model_name == BASELINE_MODEL:
        return _relative(prepare_lite0())
    raise UserError(
        f"model.pretrained: no network to fetch {model_name} weights and no "
        f"{paths.weights_dir()}/{model_name}.safetensors; "
        "put a weights file there or set model.pretrained to its path"
    )


def _relative(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(paths.project_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def baseline(data: DataConfig, image_size: int) -> dict[str, Any]:
    """The first experiment. The training recipe follows `make bench-recipe` (README, "Training recipe"): ImageNet
    weights fine-tuned whole at lr 1e-3 with a zero-initialised head, weight EMA, hflip TTA, 5 folds, the last epoch
    kept (honest OOF). Warmup, augmentation strength and EMA decay are left to the code's budget-aware defaults
    (pipeline.core.budget: they follow train.epochs), so editing `epochs` here keeps the recipe sensible."""
    return {
        "model": {"name": BASELINE_MODEL, "pretrained": choose_weights(BASELINE_MODEL)},
        "train": {"epochs": 5, "batch_size": 32, "lr": 1.0e-3, "image_size": image_size, "ema": True},
        "augment": {"vflip": 0.5 if image_size >= 128 else 0.0},
        "tta": {"views": ["identity", "hflip"]},
    }


HEADER = "# Written by `make init COMP={comp}` from data/raw/{comp}/. Edit freely; unknown keys are errors.\n"


def run(args: argparse.Namespace) -> None:
    comp = args.comp or (args.config and Path(args.config).resolve().parent.name)
    if not comp:
        raise UserError("init: COMP=<competition slug> is required (python -m pipeline init --comp <slug>)")
    folder = paths.configs_dir(comp)
    competition_path, baseline_path = folder / "competition.yaml", folder / "baseline.yaml"
    if competition_path.exists() and baseline_path.exists() and not args.force:
        log.info("init: %s and %s exist, keeping them (--force to re-infer)", competition_path, baseline_path)
        return
    if paths.mounted_competition(comp) is None:
        adopt(comp)  # data/raw/<comp>/ unzipped by hand: checked and stamped, so Make's download step is done
    raw = paths.raw_dir(comp)
    data, inferred, notes = infer_data(raw)
    metric, metric_notes, _ = choose_metric(raw / ".complete", inferred, data.task, str(competition_path))
    shares = class_shares(data, raw)
    notes += metric_notes + (imbalance_notes(shares, metric) if shares else [])
    kept = ("train_csv", "test_csv")  # None means something there (no train CSV / no sample submission)
    competition = {"data": {k: v for k, v in vars(data).items() if v is not None or k in kept}, "metric": metric,
                   "folds": {"n_folds": 5, "seed": 42}}  # fmt: skip
    experiment = baseline(data, typical_image_size(raw, data))
    balance = imbalance_recipe(shares, metric, data.task)
    if balance:  # measured by make bench-imbalance (pipeline.data.class_balance.WINNER)
        experiment["train"].update(balance)
        notes.append(f"baseline: {balance} for skewed classes under {metric} (make bench-imbalance)")
    if re.search(r"[^A-Za-z0-9_.-]", comp):
        raise UserError(f"COMP={comp!r}: use the competition's URL slug (letters, digits, - and _)")
    artifacts.write_text(competition_path, HEADER.format(comp=comp) + dump_yaml(competition))
    artifacts.write_text(baseline_path, HEADER.format(comp=comp) + dump_yaml(experiment))
    load_config(baseline_path)  # what init writes must load: fail here, not three stages later
    for note in notes:
        print(f"init: {note}")
    print(f"init: wrote {competition_path} and {baseline_path}")
