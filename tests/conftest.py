"""Shared fixtures: an isolated project folder and a factory of tiny competitions in every layout.

Builders (write_competition, tiny_experiment, run_main, run_cli, ...) live in tests/helpers/builders.py; tests import
them from there (`from helpers.builders import ...`), never from this file.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm's hub lookup would otherwise hang ~55 s offline
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.builders import write_competition  # noqa: E402

torch.set_num_threads(1)  # two threads collapse 3-16x when anything else uses the CPU


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder used as PIPELINE_ROOT and cwd, with no Kaggle Kernel around."""
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_INPUT_ROOT", str(tmp_path / "no-kaggle-input"))
    monkeypatch.setenv("KAGGLE_WORKING_ROOT", str(tmp_path / "no-kaggle-working"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)
    import pipeline.core.paths as paths

    monkeypatch.setattr(paths, "KAGGLE_INPUT", tmp_path / "no-kaggle-input")
    monkeypatch.setattr(paths, "KAGGLE_WORKING", tmp_path / "no-kaggle-working")
    return tmp_path


@pytest.fixture
def competition(project: Path) -> Callable[..., Path]:
    """competition(layout, comp="toy") -> data/raw/<comp> holding a tiny competition of that layout."""

    def make(layout: str = "csv", comp: str = "toy", **kwargs: int) -> Path:
        return write_competition(project / "data" / "raw" / comp, layout, **kwargs)

    return make
