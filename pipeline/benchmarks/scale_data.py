"""Synthetic photo competitions for `make bench-scale`: N JPEG photos of realistic sizes, in the CSV layout
(train.csv + train/<id>.jpg) or the folder-per-class layout (train/<class>/<id>.jpg), with a test folder and
sample_submission.csv.

Sizes: 400-1,600 px on the long side, aspect ratios 4:3, 3:4, 3:2, 16:9 and 1:1, and a share of 4,000 x 3,000
camera frames. Content: a smooth class-coloured scene (low-frequency shapes, upsampled) with sensor-like texture, so
JPEG sizes and decode costs are a photo's. Encoding 100,000 photos would take longer than the benchmark itself: a
pool of distinct photos per class is encoded once, and each file is one of them with its own bytes appended after the
JPEG end marker (decoders ignore them), so every file differs and decodes at its photo's real cost.

Writes data/raw/<comp>/ (and its .complete stamp); returns the folder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

CLASSES = ("beach", "forest", "city", "desert", "snow")
ASPECTS = ((4, 3), (3, 4), (3, 2), (16, 9), (1, 1))
LARGE = (4000, 3000)  # a camera frame
POOL_PER_CLASS = 12  # distinct photos per class
LARGE_EVERY = 40  # one file in 40 is a 4,000 x 3,000 frame (2.5%)


def photo(rng: np.random.Generator, width: int, height: int, label: int) -> np.ndarray:
    """A photo-like RGB frame: class colour, low-frequency shapes, fine texture."""
    base = np.array([(label * 67 + 40) % 256, (label * 151 + 80) % 256, (label * 29 + 120) % 256], dtype=np.float32)
    coarse = rng.normal(0, 45, (max(2, height // 64), max(2, width // 64), 3)).astype(np.float32)
    scene = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) + base
    tile = rng.normal(0, 8, (128, 128, 3)).astype(np.float32)
    texture = np.tile(tile, (height // 128 + 1, width // 128 + 1, 1))[:height, :width]
    return np.clip(scene + texture, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, quality: int = 88) -> bytes:
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def photo_pool(seed: int = 0) -> dict[tuple[int, bool], list[bytes]]:
    """(class, large) -> distinct JPEG photos of that class (large: 4,000 x 3,000; else 400-1,600 px)."""
    rng = np.random.default_rng(seed)
    pool: dict[tuple[int, bool], list[bytes]] = {}
    for label in range(len(CLASSES)):
        small = []
        for i in range(POOL_PER_CLASS):
            aspect = ASPECTS[i % len(ASPECTS)]
            long_side = int(rng.integers(400, 1601))
            w, h = (long_side, long_side * aspect[1] // aspect[0]) if aspect[0] >= aspect[1] else \
                (long_side * aspect[0] // aspect[1], long_side)  # fmt: skip
            small.append(encode(photo(rng, w, h, label)))
        pool[label, False] = small
        pool[label, True] = [encode(photo(rng, *LARGE, label))]
    return pool


def _file(pool: dict[tuple[int, bool], list[bytes]], index: int, label: int) -> bytes:
    large = index % LARGE_EVERY == LARGE_EVERY - 1
    choices = pool[label, large]
    return choices[(index // len(CLASSES)) % len(choices)] + index.to_bytes(8, "little")  # unique trailing bytes


def write_photo_competition(raw: Path, n_train: int, n_test: int, layout: str = "csv", seed: int = 0) -> Path:
    """data/raw/<comp>/ with `n_train` labelled and `n_test` unlabelled photos in `layout` (csv | folder_per_class)."""
    if layout not in ("csv", "folder_per_class"):
        raise ValueError(layout)
    pool = photo_pool(seed)
    raw.mkdir(parents=True, exist_ok=True)
    labels = [i % len(CLASSES) for i in range(n_train)]
    ids = [f"img{i:06d}" for i in range(n_train)]
    for i, (image_id, label) in enumerate(zip(ids, labels, strict=True)):
        folder = raw / "train" / (CLASSES[label] if layout == "folder_per_class" else "")
        if i == 0 or (layout == "folder_per_class" and i < len(CLASSES)):
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.jpg").write_bytes(_file(pool, i, label))
    if layout == "csv":
        pd.DataFrame({"id": ids, "label": [CLASSES[k] for k in labels]}).to_csv(raw / "train.csv", index=False)
    (raw / "test").mkdir(parents=True, exist_ok=True)
    test_ids = [f"test{i:06d}" for i in range(n_test)]
    for i, image_id in enumerate(test_ids):
        (raw / "test" / f"{image_id}.jpg").write_bytes(_file(pool, n_train + i, i % len(CLASSES)))
    if layout == "csv":
        sample = pd.DataFrame({"id": test_ids, "label": CLASSES[0]})
    else:  # plant-seedlings style: file names with extension, one label column
        sample = pd.DataFrame({"file": [f"{i}.jpg" for i in test_ids], "species": CLASSES[0]})
    sample.to_csv(raw / "sample_submission.csv", index=False)
    (raw / ".complete").write_text("bench-scale\n")
    return raw


def image_of(raw: Path) -> Path:
    """One large photo of a written competition (for decode timings)."""
    return next(p for p in sorted((raw / "train").rglob("*.jpg")) if Image.open(p).size == LARGE)
