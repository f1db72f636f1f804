"""Builders the tests share: tiny competitions in every layout, tiny experiments, the CLI in- and out-of-process."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = "test_efficientnet"  # timm's own tiny test model: a real architecture, trains in seconds


def _image(label_index: int, rng: np.random.Generator, size: int = 24) -> Image.Image:
    """A small RGB image whose colour depends on the class, so a model can learn something."""
    base = np.array([(label_index * 67) % 256, (label_index * 151) % 256, (label_index * 29 + 90) % 256])
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


LAYOUTS = ("csv", "csv_ids_with_ext", "folder_per_class", "multilabel_text", "onehot_single", "onehot_multi",
           "probabilities", "ordinal", "no_sample")  # fmt: skip


def write_competition(raw: Path, layout: str, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    """Write a tiny competition of `layout` into `raw` (plus the .complete stamp) and return `raw`."""
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "fox"] if layout != "ordinal" else ["0", "1", "2"]
    labels = [classes[i % len(classes)] for i in range(n_train)]
    train_ids = [f"tr{i:03d}" for i in range(n_train)]
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    raw.mkdir(parents=True, exist_ok=True)
    if layout == "csv":
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "train" / f"{i}.png", _image(classes.index(label), rng))
        pd.DataFrame({"id": train_ids, "label": labels}).to_csv(raw / "train.csv", index=False)
        _write_test(raw, "test", test_ids, ".png", rng, {"label": "cat"}, "id")
    elif layout == "csv_ids_with_ext":
        ids = [f"{i}.jpg" for i in train_ids]
        for i, label in zip(ids, labels, strict=True):
            _save(raw / "train_images" / i, _image(classes.index(label), rng))
        pd.DataFrame({"image_id": ids, "label": labels}).to_csv(raw / "train.csv", index=False)
        _write_test(raw, "test_images", [f"{i}.jpg" for i in test_ids], "", rng, {"label": "cat"}, "image_id")
    elif layout == "folder_per_class":
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "train" / label / f"{i}.png", _image(classes.index(label), rng))
        _write_test(raw, "test", [f"{i}.png" for i in test_ids], "", rng, {"species": "cat"}, "file")
    elif layout == "multilabel_text":
        tags = [" ".join(sorted({labels[k], classes[(k // 3) % 3]})) for k in range(n_train)]
        for i, tag in zip(train_ids, tags, strict=True):
            _save(raw / "train-jpg" / f"{i}.jpg", _image(classes.index(tag.split()[0]), rng))
        pd.DataFrame({"image_name": train_ids, "tags": tags}).to_csv(raw / "train_v2.csv", index=False)
        _write_test(raw, "test-jpg", test_ids, ".jpg", rng, {"tags": "cat dog"}, "image_name")
    elif layout in ("onehot_single", "onehot_multi"):
        frame = pd.DataFrame({"image_id": train_ids})
        for c in classes:
            frame[c] = [int(label == c) for label in labels]
        if layout == "onehot_multi":
            frame.loc[frame.index % 4 == 0, "fox"] = 1
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "images" / f"{i}.jpg", _image(classes.index(label), rng))
        frame.to_csv(raw / "train.csv", index=False)
        for i in test_ids:
            _save(raw / "images" / f"{i}.jpg", _image(0, rng))
        sample = pd.DataFrame({"image_id": test_ids, **{c: 0.33 for c in classes}})
        sample.to_csv(raw / "sample_submission.csv", index=False)
    elif layout == "probabilities":
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "train" / f"{i}.jpg", _image(classes.index(label), rng))
        pd.DataFrame({"id": train_ids, "breed": labels}).to_csv(raw / "labels.csv", index=False)
        _write_test(raw, "test", test_ids, ".jpg", rng, {c: 1 / 3 for c in classes}, "id")
    elif layout == "ordinal":
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "train_images" / f"{i}.png", _image(int(label), rng))
        pd.DataFrame({"id_code": train_ids, "diagnosis": labels}).to_csv(raw / "train.csv", index=False)
        _write_test(raw, "test_images", test_ids, ".png", rng, {"diagnosis": 0}, "id_code")
    elif layout == "no_sample":
        for i, label in zip(train_ids, labels, strict=True):
            _save(raw / "train" / f"{i}.png", _image(classes.index(label), rng))
        pd.DataFrame({"id": train_ids, "label": labels}).to_csv(raw / "train.csv", index=False)
        for i in test_ids:
            _save(raw / "test" / f"{i}.png", _image(1, rng))
    else:
        raise ValueError(layout)
    (raw / ".complete").write_text("test\n")
    return raw


def _write_test(raw: Path, folder: str, ids: list[str], ext: str, rng: np.random.Generator, columns: dict,
                id_column: str) -> None:  # fmt: skip
    for i in ids:
        _save(raw / folder / f"{i}{ext}", _image(int(rng.integers(0, 3)), rng))
    pd.DataFrame({id_column: ids, **columns}).to_csv(raw / "sample_submission.csv", index=False)


def tiny_experiment(project: Path, comp: str = "toy", name: str = "tiny", **sections: dict) -> Path:
    """configs/<comp>/<name>.yaml for a tiny, fast CPU run (random init, 32 px, 1 epoch)."""
    import yaml

    values = {
        "model": {"name": TINY_MODEL, "pretrained": False},
        "train": {"epochs": 1, "batch_size": 8, "image_size": 32, "num_workers": 0, "warmup_epochs": 0},
        "tta": {"views": ["identity", "hflip"]},
        "device": "cpu",
    }
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    path = project / "configs" / comp / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(capsys: pytest.CaptureFixture, *args: str) -> Result:
    """`python -m pipeline ...` in this process: same contract as the CLI, without 5 s of imports per call."""
    from pipeline.__main__ import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return Result(code, out, err)


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):  # noqa: ANN201
    """`python -m pipeline ...` in a subprocess (the user's surface: exit code + stderr)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def write_competition_config(project: Path, layout: str = "csv", comp: str = "toy", n_train: int = 30,
                             n_test: int = 6, n_folds: int = 2) -> Path:  # fmt: skip
    """data/raw/<comp>/ with a tiny competition and configs/<comp>/competition.yaml as init infers it."""
    import yaml

    from pipeline.data.layout import infer_data

    raw = write_competition(project / "data" / "raw" / comp, layout, n_train=n_train, n_test=n_test)
    data, metric, _ = infer_data(raw)
    folder = project / "configs" / comp
    folder.mkdir(parents=True, exist_ok=True)
    values = {"data": vars(data), "metric": metric, "folds": {"n_folds": n_folds, "seed": 0}}
    (folder / "competition.yaml").write_text(yaml.safe_dump(values))
    return folder / "competition.yaml"


def write_source_run(project: Path, name: str = "src", comp: str = "toy", seed: int = 0,
                     **scores: object) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """data/runs/<comp>/<name>/ as a finished experiment leaves it for train.pseudo / train.soft_labels: random
    OOF and test probabilities on the competition's folds.csv and test ids, scores.json with the folds digest
    (`scores` adds or replaces keys). Needs folds built. Returns (oof, test) frames."""
    import hashlib
    import json

    import yaml

    processed = project / "data" / "processed" / comp
    classes = yaml.safe_load((project / "configs" / comp / "competition.yaml").read_text())["data"]["classes"]
    folds = pd.read_csv(processed / "folds.csv", dtype=str)
    test = pd.read_csv(processed / "test.csv", dtype=str)
    rng = np.random.default_rng(seed)
    frames = []
    for ids in (folds["id"], test["id"]):
        frame = pd.DataFrame(rng.dirichlet(np.full(len(classes), 0.3), size=len(ids)), columns=classes)
        frame.insert(0, "id", ids.to_numpy())
        frames.append(frame)
    run = project / "data" / "runs" / comp / name
    run.mkdir(parents=True, exist_ok=True)
    frames[0].to_csv(run / "oof.csv", index=False)
    frames[1].to_csv(run / "test.csv", index=False)
    digest = hashlib.sha256((processed / "folds.csv").read_bytes()).hexdigest()
    record = {"cv": 0.5, "sample": 0, "folds_digest": digest, **scores}
    (run / "scores.json").write_text(json.dumps({k: v for k, v in record.items() if v is not None}))
    return frames[0], frames[1]


@contextlib.contextmanager
def in_project(root: Path) -> Iterator[None]:
    """What tests/conftest.py's `project` fixture sets up, for a module-scoped project (no Kaggle around)."""
    from pipeline.core import paths

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_ROOT", str(root))
        for name, folder in (("INPUT", "no-kaggle-input"), ("WORKING", "no-kaggle-working")):
            mp.setenv(f"KAGGLE_{name}_ROOT", str(root / folder))
            mp.setattr(paths, f"KAGGLE_{name}", root / folder)
        for name in ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
            mp.delenv(name, raising=False)
        mp.chdir(root)
        yield


# Training keys added after runs were already trained (off by default): their fingerprints must not change.
NEWER_TRAIN_KEYS = ("swa", "pseudo", "soft_labels", "seeds")


def fingerprint_before_newer_keys(cfg) -> str:  # noqa: ANN001 - Config
    """What config.fingerprint hashed for `cfg` before NEWER_TRAIN_KEYS existed (computed independently)."""
    import hashlib
    import json

    from pipeline.core.config import NOT_FINGERPRINTED, TRAINING_SECTIONS, to_dict

    values = {key: to_dict(cfg)[key] for key in TRAINING_SECTIONS}
    for section, key in (*NOT_FINGERPRINTED, *(("train", key) for key in NEWER_TRAIN_KEYS)):
        values[section].pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
