"""A prediction table of 100,000 test rows is written in chunks: never held whole as one CSV string."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import artifacts


def test_a_large_table_is_written_in_chunks_with_the_same_bytes(tmp_path: Path) -> None:
    rows = 100_000
    frame = pd.DataFrame(np.random.default_rng(0).random((rows, 5)), columns=[f"class{i}" for i in range(5)])
    frame.insert(0, "id", [f"test{i:06d}" for i in range(rows)])
    path = tmp_path / "fold0" / "test.csv"
    tracemalloc.start()
    artifacts.write_csv(path, frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    text = path.read_text()
    assert text == frame.to_csv(index=False, lineterminator="\n")
    assert peak < len(text) / 2, f"peak {peak / 1e6:.1f} MB while writing {len(text) / 1e6:.1f} MB"
    assert not list(path.parent.glob(".*.tmp"))
