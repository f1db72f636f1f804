"""A built Kaggle bundle without training: the files kaggle-push and kaggle-submit read, written straight to disk.

kaggle-push uploads whatever dataset/ holds and pushes kernel/; kaggle-submit reads bundle.json and kaggle-push.json.
Neither looks inside the weights, so small stand-in files exercise every client call in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMP, EXP, USER = "toy", "tiny", "fake-user"
DATASET, KERNEL = f"{USER}/toy-tiny-bundle", f"{USER}/toy-tiny-inference"
MODEL = f"{USER}/toy-tiny-weights/pyTorch/default"  # the Model instance the weights travel in (kaggle.weights: model)
CONFIG = f"configs/{COMP}/{EXP}.yaml"
FILES = {"fold0.safetensors": b"w" * 3000, "fold1.safetensors": b"v" * 2000, "folds.csv": b"id,label,fold\n"}


def write_bundle(root: Path, output_file: str = "submission.csv", accelerator: str | None = "NvidiaTeslaT4",
                 files: dict[str, bytes] | None = None, model: bool = False) -> Path:  # fmt: skip
    """configs/toy/{competition,tiny}.yaml and data/runs/toy/tiny/kaggle-bundle/ for USER; returns the bundle.
    `model`: the *.safetensors go to kaggle-bundle/model/ as kaggle-bundle writes them for kaggle.weights: model."""
    configs = root / "configs" / COMP
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "competition.yaml").write_text("metric: accuracy\ndata:\n  classes: [cat, dog]\n")
    (configs / f"{EXP}.yaml").write_text("train:\n  epochs: 1\n")
    bundle = root / "data" / "runs" / COMP / EXP / "kaggle-bundle"
    dataset, kernel = bundle / "dataset", bundle / "kernel"
    dataset.mkdir(parents=True, exist_ok=True)
    kernel.mkdir(parents=True, exist_ok=True)
    weights = bundle / "model"
    for name, data in (FILES if files is None else files).items():
        folder = weights if model and name.endswith(".safetensors") else dataset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    manifest: dict[str, Any] = {"format": 1, "comp": COMP, "exp": EXP, "dataset": DATASET, "kernel": KERNEL,
                                "metric": "accuracy", "cv": 0.5, "git_commit": "abc",
                                "output_file": output_file}  # fmt: skip
    if model:
        from pipeline.kaggle.model_upload import write_model_metadata

        manifest["weights_model"] = {"instance": MODEL, "files": sorted(p.name for p in weights.iterdir())}
        write_model_metadata(weights, MODEL, "toy tiny weights", "the fold weights")
    (dataset / "bundle.json").write_text(json.dumps(manifest))
    (dataset / "dataset-metadata.json").write_text(json.dumps(
        {"title": "toy tiny bundle", "id": DATASET, "licenses": [{"name": "CC0-1.0"}]}))  # fmt: skip
    (kernel / "kernel.py").write_text("print('predicting')\n")
    metadata = {"id": KERNEL, "title": "toy tiny inference", "code_file": "kernel.py", "language": "python",
                "kernel_type": "script", "is_private": True, "enable_gpu": accelerator is not None,
                "enable_internet": False, "dataset_sources": [DATASET], "competition_sources": [COMP],
                "kernel_sources": [], "model_sources": [], "docker_image_pinning_type": "original"}  # fmt: skip
    if accelerator:
        metadata["machine_shape"] = accelerator
    (kernel / "kernel-metadata.json").write_text(json.dumps(metadata))
    return bundle


def pushed_record(root: Path) -> dict[str, Any]:
    path = root / "data" / "runs" / COMP / EXP / "kaggle-push.json"
    return json.loads(path.read_text()) if path.is_file() else {}
