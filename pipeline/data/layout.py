"""Layout inference for `init` (pipeline.commands.init): what a competition's raw files hold.

Reads data/raw/<comp>/ (or the Kernel's mount): the train table or class folders, the id and label columns, the
task (single-label, multi-label, ordinal), the test listing and the submission format, and a typical image size.
Returns them as a DataConfig plus the notes init prints; where it can't decide it raises UserError naming the key
to set by hand. Writes nothing.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from pipeline.core.config import DataConfig
from pipeline.core.errors import UserError
from pipeline.data.tables import IMAGE_EXTS, read_csv

log = logging.getLogger(__name__)

ID_NAMES = ("id", "image_id", "id_code", "image", "image_name", "img", "filename", "file", "name", "fname", "path")
LABEL_NAMES = ("label", "labels", "tags", "class", "target", "category", "diagnosis", "breed", "species", "y")
ORDINAL_NAMES = ("diagnosis", "grade", "level", "severity", "score", "rating")


def _natural_key(name: str) -> tuple:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _image_dirs(raw: Path) -> dict[str, list[Path]]:
    """Folders (relative posix path -> images directly inside) up to three levels deep."""
    found: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(raw):
        depth = len(Path(root).relative_to(raw).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < 3 else []
        images = [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_EXTS]
        if images:
            found[Path(root).relative_to(raw).as_posix()] = images
    return found


def _prefer(names: list[str], word: str) -> list[str]:
    return sorted(names, key=lambda n: (word not in n.lower(), len(n), n))


def _find_images(raw: Path, ids: list[str], dirs: list[str], word: str, key: str) -> tuple[str, str]:
    """(folder, extension) under which every sampled id names an image file."""
    probe = ids[:50]
    exts = ["", *IMAGE_EXTS, *(e.upper() for e in IMAGE_EXTS)]
    for folder in _prefer(dirs, word):
        for ext in exts:
            if all((raw / folder / f"{i}{ext}").is_file() for i in probe):
                return ("" if folder == "." else folder), ext
    raise UserError(
        f"{raw}: no folder holds images named after the ids (e.g. {probe[0]!r}); set {key} and data.image_ext"
    )


def _pick_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _require_filled(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """One-hot label columns need 0 or 1 in every row: name the first blank cell."""
    for column in columns:
        blank = frame[column].isna().to_numpy()
        if blank.any():
            row = int(blank.argmax()) + 2  # +1 header, +1 one-based
            raise UserError(f"{path} row {row}, column {column!r} is blank; one-hot label columns need 0 or 1 in every "
                            "row: fill it or drop the row")  # fmt: skip


def _unwrapped(raw: Path) -> Path:
    """The competition's own folder: `raw`, or its one subfolder when the zip was unzipped with a top-level folder
    (data/raw/<slug>/<slug>/train.csv), i.e. `raw` holds nothing but that folder."""
    entries = [p for p in raw.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and any(entries[0].glob("*.csv")):
        return entries[0]
    return raw


def infer_data(raw: Path) -> tuple[DataConfig, str, list[str]]:
    """(data layout, default metric, notes) for the competition files under `raw`."""
    if not raw.is_dir():
        raise UserError(f"{raw} not found; run `make download COMP={raw.name}` first")
    top = _unwrapped(raw)
    prefix = "" if top == raw else f"{top.relative_to(raw).as_posix()}/"
    csvs = sorted(prefix + p.name for p in top.glob("*.csv"))
    sample_name = next((c for c in csvs if "sample" in c.lower()), None)
    skip = {sample_name, f"{prefix}solution.csv", f"{prefix}test.csv"}
    train_csvs = [c for c in csvs if c not in skip and ("train" in c.lower() or "label" in c.lower())]
    names = (f"{prefix}train.csv", f"{prefix}train_labels.csv", f"{prefix}labels.csv")
    train_name = next((c for c in names if c in train_csvs), None)
    train_name = train_name or (train_csvs[0] if train_csvs else None)
    image_dirs = _image_dirs(raw)
    notes: list[str] = []
    data = DataConfig(test_csv=sample_name)
    if train_name is None:
        infer_class_folders(raw, data, image_dirs, notes)
    else:
        infer_train_table(raw, train_name, data, image_dirs, notes)
    infer_test(raw, sample_name, data, image_dirs, notes)
    metric = infer_submission(data, notes)
    if len(data.classes) < 2:
        raise UserError(f"{raw}: found {len(data.classes)} class(es); set data.classes and data.label_column")
    if (top / "solution.csv").exists():
        data.holdout = f"{prefix}solution.csv"
    return data, metric, notes


def infer_class_folders(raw: Path, data: DataConfig, image_dirs: dict[str, list[Path]], notes: list[str]) -> None:
    """No train CSV: one folder per class."""
    parents = Counter(str(Path(d).parent.as_posix()) for d in image_dirs if "/" in d or d != ".")
    candidates = [p for p, n in parents.items() if n >= 2 and p != "."] or [p for p, n in parents.items() if n >= 2]
    if not candidates:
        raise UserError(f"{raw}: no train CSV and no folder-per-class layout found; set data.train_csv")
    data.train_dir = _prefer(candidates, "train")[0]
    data.train_csv, data.label_column = None, None
    data.classes = sorted((Path(d).name for d in image_dirs if Path(d).parent.as_posix() == data.train_dir),
                          key=_natural_key)  # fmt: skip
    notes.append(f"train: one folder per class under {data.train_dir}/ ({len(data.classes)} classes)")


def infer_train_table(
    raw: Path, train_name: str, data: DataConfig, image_dirs: dict[str, list[Path]], notes: list[str]
) -> None:
    """A train CSV: its id column, its labels (infer_labels) and the folder its images are in."""
    frame = read_csv(raw / train_name, "train table")
    if frame.empty:
        raise UserError(f"{raw / train_name} has a header but no rows: no training data; re-download the data")
    data.train_csv = train_name
    data.id_column = _pick_column(list(frame.columns), ID_NAMES) or frame.columns[0]
    infer_labels(raw / train_name, frame, data, notes)
    ids = frame[data.id_column].dropna().astype(str).tolist()
    data.train_dir, data.image_ext = _find_images(raw, ids, list(image_dirs), "train", "data.train_dir")
    notes.append(
        f"train: {train_name}, id column {data.id_column!r}, images {data.train_dir or '.'}/<id>{data.image_ext}"
    )


def infer_labels(path: Path, frame: pd.DataFrame, data: DataConfig, notes: list[str]) -> None:
    """One 0/1 column per class (single- or multi-label), else one label column (single, multi or ordinal)."""
    others = [c for c in frame.columns if c != data.id_column]
    binary = [c for c in others if frame[c].dropna().isin(["0", "1"]).all() and len(frame[c].dropna())]
    if len(binary) >= 2 and len(binary) == len(others):
        _require_filled(frame, binary, path)
        data.label_columns, data.label_column = binary, None
        data.classes = binary
        one_each = (frame[binary].astype(int).sum(axis=1) == 1).all()
        data.task = "single_label" if one_each else "multi_label"
        notes.append(f"labels: one 0/1 column per class {binary} ({data.task.replace('_', '-')})")
        return
    label = others[0] if len(others) == 1 else _pick_column(others, LABEL_NAMES)
    if label is None:
        raise UserError(f"{path}: can't tell the label column among {others}; set data.label_column")
    data.label_column = label
    values = frame[label].dropna().str.strip()
    tokens = {t for v in values for t in v.split(" ") if t}
    if values.str.contains(" ").any() and len(tokens) < values.nunique():
        data.task, data.label_separator = "multi_label", " "
        data.classes = sorted(tokens, key=_natural_key)
    else:
        data.classes = sorted(values.unique(), key=_natural_key)
    if label.lower() in ORDINAL_NAMES and all(_natural_key(c)[0] == 0 for c in data.classes):
        data.task = "ordinal"
    notes.append(f"labels: column {label!r}, {data.task.replace('_', '-')}")


def infer_test(
    raw: Path, sample_name: str | None, data: DataConfig, image_dirs: dict[str, list[Path]], notes: list[str]
) -> None:
    """Test ids and images: from the sample submission, else every image of a test folder."""
    if sample_name:
        sample = read_csv(raw / sample_name, "sample submission")
        columns = list(sample.columns)  # the id column is usually first, but find it by name when it is not
        names = ((data.id_column or "").lower(), *ID_NAMES)
        data.submission_id_column = _pick_column(columns, names) or columns[0]
        sample_ids = sample[data.submission_id_column].astype(str).tolist()
        test_dirs = [d for d in image_dirs if d != data.train_dir and not d.startswith(f"{data.train_dir}/")]
        folder, ext = _find_images(raw, sample_ids, test_dirs or list(image_dirs), "test", "data.test_dir")
        if data.train_csv is not None and ext != data.image_ext:
            raise UserError(
                f"{raw}: train images end in {data.image_ext!r} but test images in {ext!r}; set data.image_ext"
            )
        data.test_dir, data.image_ext = folder, ext
        data.submission_columns = [c for c in columns if c != data.submission_id_column]
        notes.append(f"test: ids from {sample_name}, images {folder or '.'}/<id>{ext}")
        return
    tests = [d for d in image_dirs if "test" in d.lower()]
    if not tests:
        raise UserError(f"{raw}: no sample submission and no test image folder; set data.test_dir")
    data.test_dir = _prefer(tests, "test")[0]
    notes.append(f"test: every image in {data.test_dir}/ (no sample submission)")


def infer_submission(data: DataConfig, notes: list[str]) -> str:
    """The submission's format and columns from the sample's columns and the task; returns the default metric."""
    columns = data.submission_columns
    if len(columns) > 1 and set(columns) <= set(data.classes):
        data.submission_format = "probabilities"
        metric = "roc_auc" if data.label_columns else "log_loss"
    elif data.task == "multi_label":
        data.submission_format, metric = "labels", "f1_micro"
    elif data.task == "ordinal":
        data.submission_format, metric = "numeric", "quadratic_weighted_kappa"
    else:
        data.submission_format, metric = "label", "accuracy"
    if not data.submission_columns:
        data.submission_columns = (
            data.classes if data.submission_format == "probabilities" else [data.label_column or "label"]
        )
    notes.append(f"submission: {data.submission_format} ({', '.join(columns[:4])}{'...' if len(columns) > 4 else ''})")
    notes.append(f"classes: {len(data.classes)}")  # the metric's own line comes from pipeline.data.competition_metric
    return metric


def typical_image_size(raw: Path, data: DataConfig) -> int:
    """Median side of a few train images, rounded to a multiple of 32 within 64..384."""
    folder = raw / (data.train_dir or ".")
    sides = []
    for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)[:20]:
        with Image.open(file) as image:
            sides.append(min(image.size))
    side = sorted(sides)[len(sides) // 2] if sides else 224
    return int(min(384, max(64, round(side / 32) * 32)))
