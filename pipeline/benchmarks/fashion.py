"""Fashion-MNIST from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), read as arrays.

Input: the package's idx files (`apt-get install dataset-fashion-mnist`). Output: (images (n, 28, 28) uint8,
labels (n,)) of the `train` or `t10k` split, and the class names. Used by `make bench-recipe`
(pipeline.benchmarks.recipe_bench), which materialises them as a Kaggle-layout competition.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


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
