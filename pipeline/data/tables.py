"""Reading a competition's tables and images into the pipeline's normal form.

Normal form of the train table (what folds.csv holds, plus `fold`): `id`, `image` (path relative to
the competition's raw folder), `label` (a class name; for multi-label the class names joined by
data.label_separator), and `group` when folds.group_column is set. The test listing (test.csv):
`id`, `image`, in submission order.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.core.config import DataConfig, FoldsConfig
from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
Image.MAX_IMAGE_PIXELS = 30_000**2  # very large scans are legitimate; PIL's default refuses ~90 MP
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error to report, not to paper over


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a competition CSV with every column as text, verbatim: ids like 007 keep their zeros, and ids or labels
    such as NA, null, None or nan stay strings (pandas' default NA parsing is off; only a blank cell is missing).

    Every module that reads a competition CSV goes through here (or `read_typed_csv`): tests/test_reliability.py
    checks that no other module calls pandas' reader on one.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError as exc:
        raise UserError(f"{what} {path} not found; check data.* in competition.yaml or re-run download") from exc
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{what} {path} is empty; re-download the competition data") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not a readable CSV ({str(exc).splitlines()[0]})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) == 1:
        delimiter = next((d for d in (";", "\t", "|") if d in frame.columns[0]), None)
        if delimiter is not None:
            raise UserError(
                f"{what} {path} is {delimiter!r}-delimited (one column named {frame.columns[0]!r}); "
                "save it comma-separated (e.g. pandas: read_csv(sep=...).to_csv(index=False))"
            )
    return frame


def read_typed_csv(path: Path, what: str) -> pd.DataFrame:
    """`read_csv`, then every column after the first (the id) numeric where each non-blank cell is a number.

    How a submission is compared with sample_submission: the ids stay text verbatim, number columns are numbers,
    and an all-blank target column (some competitions ship one) stays text, so it demands no particular type.
    """
    frame = read_csv(path, what)
    for column in frame.columns[1:]:
        values = frame[column]
        if values.isna().all():
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if (numbers.isna() == values.isna()).all():
            frame[column] = numbers
    return frame


def _require_columns(frame: pd.DataFrame, columns: list[str], path: Path, keys: list[str]) -> None:
    for column, key in zip(columns, keys, strict=True):
        if column not in frame.columns:
            raise UserError(
                f"{path}: no column {column!r} (set {key} in competition.yaml; columns: {list(frame.columns)})"
            )


def image_path(folder: str, image_id: str, ext: str) -> str:
    return f"{folder}/{image_id}{ext}" if folder else f"{image_id}{ext}"


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_train_table(data: DataConfig, folds: FoldsConfig, raw: Path) -> pd.DataFrame:
    """The train table in normal form (id, image, label[, group]), validated row by row."""
    if data.train_csv is None:
        table = _folder_per_class(data, raw)
    else:
        table = _from_csv(data, folds, raw)
    if table.empty:
        raise UserError(f"{raw / (data.train_csv or data.train_dir)}: no training rows; check the data folder")
    duplicated = table["id"].duplicated().to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        value = table["id"].iloc[position]
        first = int(np.flatnonzero((table["id"] == value).to_numpy())[0])
        where = _where(data, raw / (data.train_csv or data.train_dir), position, data.id_column)
        raise UserError(
            f"{where}: duplicate id {value!r} (first at row {first + 2}; {int(duplicated.sum())} duplicate(s) in all); "
            "ids must be unique: drop or rename the repeats"
        )
    _check_labels(table, data, raw / (data.train_csv or data.train_dir))
    _check_files(table, raw, data.train_csv or data.train_dir)
    return table.reset_index(drop=True)


def _folder_per_class(data: DataConfig, raw: Path) -> pd.DataFrame:
    root = raw / data.train_dir
    if not root.is_dir():
        raise UserError(f"train folder {root} not found; set data.train_dir in competition.yaml")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in list_images(class_dir):
            rel = file.relative_to(raw).as_posix()
            rows.append({"id": file.relative_to(root).as_posix(), "image": rel, "label": class_dir.name})
    return pd.DataFrame(rows, columns=["id", "image", "label"])


def _from_csv(data: DataConfig, folds: FoldsConfig, raw: Path) -> pd.DataFrame:
    path = raw / data.train_csv
    frame = read_csv(path, "train table")
    columns, keys = [data.id_column], ["data.id_column"]
    if data.label_columns:
        columns += data.label_columns
        keys += ["data.label_columns"] * len(data.label_columns)
    else:
        columns.append(data.label_column or "")
        keys.append("data.label_column")
    if folds.group_column:
        columns.append(folds.group_column)
        keys.append("folds.group_column")
    _require_columns(frame, columns, path, keys)
    ids = frame[data.id_column]
    missing_ids = ids.isna()
    if missing_ids.any():
        row = int(np.flatnonzero(missing_ids.to_numpy())[0]) + 2  # +1 header, +1 one-based
        raise UserError(f"{path} row {row}: empty id in column {data.id_column!r}")
    if data.label_columns:
        labels = _onehot_to_labels(frame, data, path)
    else:
        labels = frame[data.label_column].str.strip()
    table = pd.DataFrame(
        {
            "id": ids.astype(str),
            "image": [image_path(data.train_dir, i, data.image_ext) for i in ids.astype(str)],
            "label": labels,
        }
    )
    if folds.group_column:
        table["group"] = frame[folds.group_column].astype(str)
    return table


def _onehot_to_labels(frame: pd.DataFrame, data: DataConfig, path: Path) -> pd.Series:
    values = frame[data.label_columns]
    for column in data.label_columns:
        bad = ~values[column].isin(["0", "1", "0.0", "1.0"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise UserError(
                f"{path} row {row}, column {column!r}: expected 0 or 1, got {values[column][bad].iloc[0]!r}"
            )
    hot = values.astype(float).astype(int).to_numpy()
    names = np.array(data.label_columns)
    return pd.Series([data.label_separator.join(names[row == 1]) for row in hot], index=frame.index)


def split_labels(label: str, data: DataConfig) -> list[str]:
    return [part for part in label.split(data.label_separator) if part] if data.task == "multi_label" else [label]


def _where(data: DataConfig, path: Path, position: int, column: str | None) -> str:
    """`<file> row N, column 'c'` for a CSV table (the header is row 1, as in editors); else the folder."""
    if data.train_csv is None:
        return str(path)
    return f"{path} row {position + 2}" + (f", column {column!r}" if column else "")


def _check_labels(table: pd.DataFrame, data: DataConfig, path: Path) -> None:
    column = ", ".join(data.label_columns) if data.label_columns else data.label_column
    missing = table["label"].isna()
    if data.task != "multi_label" and missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise UserError(
            f"{_where(data, path, row, column)}: empty label for id {table['id'].iloc[row]!r}; fill it or drop the row"
        )
    if not data.classes:
        return
    known = set(data.classes)
    for i, label in enumerate(table["label"].fillna("")):
        for name in split_labels(label, data):
            if name not in known:
                raise UserError(
                    f"{_where(data, path, i, column)}: id {table['id'].iloc[i]!r} has label {name!r}, which is not in "
                    "data.classes; fix the row, or re-run init (or add it to data.classes in competition.yaml)"
                )


def _check_inside(image_id: str, rel: str, raw: Path, root: Path, what: str) -> None:
    """An id must not reach outside the competition folder: no `..` in its path, no symlink resolving elsewhere."""
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise UserError(f"{raw / what}: id {image_id!r} points outside the competition folder ({rel}); "
                        "ids name files inside it: fix or drop the row")  # fmt: skip
    if not (raw / rel).resolve().is_relative_to(root):
        raise UserError(
            f"{raw / what}: the image of id {image_id!r} ({raw / rel}) is a link to {(raw / rel).resolve()}, outside "
            f"the competition folder; copy the file in (or link the whole folder {raw} instead)"
        )


def _check_files(table: pd.DataFrame, raw: Path, what: str) -> None:
    """Every listed image is inside the competition folder, exists and is not empty.

    One lstat per image: resolving every path (a syscall per path component) took ~1 ms an image, most of `folds` at
    100,000 images. A plain file in a folder already found inside the competition folder is inside too; a link, a
    `..` or a folder seen for the first time gets the full check (`_check_inside`)."""
    root, base, inside = raw.resolve(), str(raw), set()
    for image_id, rel in zip(table["id"], table["image"], strict=True):
        full, folder = os.path.join(base, rel), os.path.dirname(rel)
        try:
            st: os.stat_result | None = os.lstat(full)
        except OSError:
            st = None
        regular = st is not None and stat.S_ISREG(st.st_mode)
        plain = regular and not os.path.isabs(rel) and ".." not in rel.split("/")
        if not (plain and folder in inside):
            _check_inside(image_id, rel, raw, root, what)
            if plain:
                inside.add(folder)
        if st is not None and stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(full)
            except OSError:
                st = None
        size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None
        if size is None:
            raise UserError(
                f"{raw / what}: image for id {image_id!r} not found at {raw / rel}; check data.image_ext and data.*_dir"
            )
        if size == 0:
            raise UserError(f"{raw / rel} (id {image_id!r} in {raw / what}) is empty (0 bytes); replace the file "
                            "(re-run download with --force) or drop its row")  # fmt: skip


def read_test_table(data: DataConfig, raw: Path) -> pd.DataFrame:
    """The test listing (id, image) in submission order: sample_submission's ids, else every test image.

    Without a sample submission, one rule for every layout: a test id is the image's path under the test folder
    written as train ids are written, i.e. without `data.image_ext` when train ids leave it out (a CSV of bare ids)
    and with the file's own extension otherwise (ids that carry it, folder-per-class layouts)."""
    if data.test_csv:
        path = raw / data.test_csv
        frame = read_csv(path, "test listing")
        _require_columns(frame, [data.submission_id_column], path, ["data.submission_id_column"])
        ids = frame[data.submission_id_column].astype(str)
        table = pd.DataFrame({"id": ids, "image": [image_path(data.test_dir, i, data.image_ext) for i in ids]})
    else:
        root = raw / data.test_dir
        if not root.is_dir():
            raise UserError(f"test folder {root} not found; set data.test_dir or data.test_csv in competition.yaml")
        files = list_images(root)
        table = pd.DataFrame(
            {
                "id": [f.relative_to(root).as_posix()[: -len(data.image_ext) or None] for f in files],
                "image": [f.relative_to(raw).as_posix() for f in files],
            }
        )
    where = raw / (data.test_csv or data.test_dir)
    if table.empty:
        what = "has a header but no rows" if data.test_csv else "holds no images"
        raise UserError(f"{where} {what}: no test images listed; re-download the competition data")
    repeated = table["id"][table["id"].duplicated()].unique().tolist()
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:5]) + (
            f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        )
        raise UserError(
            f"{where}: duplicate test id(s) {shown}; each test id must appear once (predictions are matched by id)"
        )
    _check_files(table, raw, data.test_csv or data.test_dir)
    return table


def encode_targets(labels: pd.Series, data: DataConfig) -> np.ndarray:
    """Class indices (n,) for single-label and ordinal, a 0/1 float matrix (n, C) for multi-label."""
    index = {name: i for i, name in enumerate(data.classes)}
    if data.task == "multi_label":
        matrix = np.zeros((len(labels), len(data.classes)), dtype=np.float32)
        for row, label in enumerate(labels.fillna("")):
            for name in split_labels(label, data):
                matrix[row, index[name]] = 1.0
        return matrix
    return np.array([index[label] for label in labels], dtype=np.int64)


def high_depth_to_uint8(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """One gray channel of a 16-bit, 32-bit integer or float image as uint8, by the mode's fixed scale (not per-image
    min/max, so every image of a data set keeps the same brightness scale):

    - I;16* (16-bit) and I (32-bit integer, how PIL reads most 16-bit TIFFs/PNGs): 0..65535 -> 0..255 (/257);
    - F (32-bit float): 0..1 (the usual float convention) -> 0..255 when no value exceeds 1, else read as 0..255.
    Values these scales cannot hold (NaN/inf, negative, above 65535 or, for floats, above 255) are refused.
    """
    finite = np.isfinite(array).all()
    low, high = (float(array.min()), float(array.max())) if array.size and finite else (0.0, 0.0)
    limit = 255.0 if mode == "F" else 65535.0
    if not finite or low < 0 or high > limit:
        what = "NaN or infinite values" if not finite else f"values {low:g}..{high:g}"
        raise UserError(
            f"image {path} (mode {mode}) has {what}, outside the 0..{'1 or 0..255' if mode == 'F' else '65535'} this "
            "pipeline can scale to 8 bits; convert it (e.g. to an 8-bit PNG), or drop its row and rebuild folds"
        )
    scale = (255.0 if high <= 1.0 else 1.0) if mode == "F" else 1 / 257
    return np.rint(array * scale).clip(0, 255).astype(np.uint8)


def load_image(path: Path, at_least: int | None = None) -> np.ndarray:
    """Decode any common image as RGB uint8 (H, W, 3): EXIF rotation, gray, RGBA, palette, 16-bit, CMYK.

    `at_least`: the caller resizes to that side next, so a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (the codec's
    DCT scaling, PIL's `draft`) as long as both sides stay at least that large: several times faster for a photo ten
    times larger than the target, and close to decoding in full and resizing (tests/data/test_decode.py).
    """
    try:
        with Image.open(path) as image:
            if at_least and image.format == "JPEG":
                image.draft(None, (at_least, at_least))
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I") or image.mode == "F":  # 16-bit, 32-bit integer or float gray
                return np.stack([high_depth_to_uint8(np.asarray(image, dtype=np.float64), image.mode, path)] * 3, -1)
            if image.mode in ("RGBA", "LA", "P", "PA"):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise UserError(
            f"image {path} not found; it was listed when folds.csv was made: restore it, or rebuild folds"
        ) from exc
    except UnidentifiedImageError as exc:
        size = path.stat().st_size if path.is_file() else 0
        what = "is empty (0 bytes)" if size == 0 else "is not an image (no image format recognises its content)"
        raise UserError(
            f"image {path} {what}; replace the file, or drop its row and rebuild folds (folds --force)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise UserError(f"image {path} is too large to decode safely ({exc}); downscale the file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "is truncated" if "truncated" in detail.lower() else f"is corrupt ({detail})"
        raise UserError(
            f"image {path} {what}; replace the file (re-run download with --force), "
            "or drop its row and rebuild folds (folds --force)"
        ) from exc
