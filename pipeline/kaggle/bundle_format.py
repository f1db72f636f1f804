"""The Kaggle bundle's contract between the stage that writes it (pipeline.kaggle.bundle) and the Kernel that reads it,
and reading a built bundle's manifests (kaggle-push, kaggle-submit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from pipeline.core.config import Config

MANIFEST_FORMAT = 1  # bundle.json's layout; pipeline.kaggle.kernel_predict refuses others


def read_bundle(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle.json, kernel-metadata.json) of the experiment's bundle; UserError when there is none."""
    out = paths.for_config(cfg)
    if not out.kaggle_manifest.is_file():
        raise UserError(f"{out.kaggle_manifest} not found; run `make kaggle-bundle CONFIG=...` first")
    return artifacts.read_json(out.kaggle_manifest), artifacts.read_json(out.kaggle_kernel / "kernel-metadata.json")


def version_notes(manifest: dict[str, Any]) -> str:
    """The dataset version's notes, in the form `submit` gives submission descriptions."""
    from pipeline.core.provenance import describe

    commit = manifest.get("git_commit") or "unknown"
    return describe(manifest["exp"], manifest.get("metric"), manifest.get("cv"), commit)
