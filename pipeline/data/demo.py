"""The embedded demo competition: scikit-learn's bundled handwritten digits, in Kaggle's layout.

`materialise(raw)` writes, into data/raw/demo/: train.csv (id,label), train/<id>.png, test/<id>.png,
sample_submission.csv (id,label) and solution.csv (the held-out test labels, which the pipeline only
uses to report a `holdout` score, like a solution file published after a competition closes), then
the .complete stamp last. Real data that installs offline: 1,797 8x8 greyscale digits, 10 classes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pipeline.core import artifacts

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2
SEED = 0


def materialise(raw: Path) -> Path:
    raw = Path(raw)
    if (raw / ".complete").exists():
        log.info("demo: %s already complete, skipping", raw)
        return raw
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 levels -> 0..255
    ids = np.array([f"digit_{i:04d}" for i in range(len(images))])
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SEED
    )
    staging = raw.with_name(f".{raw.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    for folder, rows in (("train", train_idx), ("test", test_idx)):
        (staging / folder).mkdir(parents=True)
        for i in rows:
            Image.fromarray(images[i], mode="L").save(staging / folder / f"{ids[i]}.png")
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    pd.DataFrame({"id": ids[train_idx], "label": digits.target[train_idx]}).to_csv(staging / "train.csv", index=False)
    pd.DataFrame({"id": ids[test_idx], "label": 0}).to_csv(staging / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[test_idx], "label": digits.target[test_idx]}).to_csv(staging / "solution.csv", index=False)
    if raw.exists():  # an earlier, interrupted materialisation: it never got its stamp
        shutil.rmtree(raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(raw)
    artifacts.write_text(raw / ".complete", "sklearn.datasets.load_digits\n")
    log.info("demo: %d train + %d test digits -> %s", len(train_idx), len(test_idx), raw)
    return raw
