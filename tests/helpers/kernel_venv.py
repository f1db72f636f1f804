"""A Python that plays Kaggle's image for kernels run in tests: it sees this virtualenv's packages except this package
and the wheels a bundle ships, and installs those wheels into itself, never into this virtualenv.

`kernel_python(root)` makes a virtualenv (no pip of its own) under `root` whose .pth adds a folder of symlinks to
this virtualenv's site-packages, less the hidden distributions; returns its interpreter. `kernel_env(**extra)` is a
clean environment for it (no pip settings, import paths, Kaggle or pipeline variables).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path


def shipped_distributions() -> list[str]:
    """This package and the dependencies its bundles ship as wheels (what Kaggle's image lacks)."""
    from pipeline.kaggle import wheels

    return [wheels.DISTRIBUTION, *wheels.bundled_distributions(wheels.runtime_requirements())]


def kaggle_image(root: Path, left_out: list[str]) -> Path:
    """A folder showing this virtualenv's site-packages except the distributions in `left_out` (symlinks)."""
    site = Path(importlib.metadata.distribution("pandas").locate_file(""))
    hidden = set()
    for name in left_out:
        hidden |= {f.parts[0] for f in importlib.metadata.distribution(name).files or [] if f.parts[0] != ".."}
    view = root / "kaggle-image"
    view.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.name not in hidden and not entry.name.endswith(".pth"):
            (view / entry.name).symlink_to(entry)
    return view


def fresh_venv(root: Path, image: Path) -> Path:
    """A new virtualenv (no pip of its own) whose .pth adds `image`, so it sees those packages but installs apart."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(purelib) / "kaggle-image.pth").write_text(f"{image}\n")
    return python


def kernel_python(root: Path) -> Path:
    """A new virtualenv under `root` that sees the image's packages but installs apart; its python."""
    return fresh_venv(root, kaggle_image(root, shipped_distributions()))


def kernel_env(**extra: str) -> dict[str, str]:
    drop = ("PIP_", "PYTHON", "KAGGLE_", "PIPELINE_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra}
