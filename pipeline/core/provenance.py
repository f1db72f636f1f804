"""What produced an artifact: git commit and package versions (recorded in scores.json)."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
from pathlib import Path

PACKAGES = ("torch", "torchvision", "timm", "albumentations", "pandas", "numpy", "scikit-learn", "kaggle")


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                           text=True, timeout=10, check=False).stdout.strip()  # fmt: skip
    return result.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


SEPARATOR = " | "
DESCRIPTION = re.compile(r"^(?P<exp>[^|]+?) \| CV ")  # what `describe` writes first; `scores` reads it back


def describe(experiment: str, metric: str | None, cv: float | None, commit: str) -> str:
    """The submission description: `<exp> | CV <metric> <score> | git <commit>`."""
    score = f"{metric} {cv:.5f}" if metric and cv is not None else "n/a"
    return SEPARATOR.join((experiment, f"CV {score}", f"git {commit}"))


def experiment_from_description(text: str | None) -> str | None:
    """The experiment name `describe` put in a submission's description, or None for other submissions."""
    match = DESCRIPTION.match(text or "")
    return match.group("exp").strip() if match else None


def code_version() -> str:
    """The pipeline code that produced an artifact: its package version, plus the commit of the pipeline's own git
    checkout when it runs from one (not the user's project repository, whose commits change with their configs)."""
    from pipeline import __version__

    commit = git_commit(Path(__file__).resolve().parent)
    return f"{__version__}+{commit}" if commit else __version__
