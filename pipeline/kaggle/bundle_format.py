"""The Kaggle bundle's contract between the stage that writes it (pipeline.kaggle.bundle) and the Kernel that reads it,
and reading a built bundle's manifests (kaggle-push, kaggle-submit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from pipeline.core.config import Config

MANIFEST_FORMAT = 1  # bundle.json's layout; pipeline.kaggle.kernel_predict refuses others


def fold_weight_files(entry: dict[str, Any]) -> dict[int | None, str]:
    """A manifest fold entry's weights files: {None: name} for one model, {seed: name} for a seed bag's members
    (the entry's `members` list, pipeline.core.bag): what the bundle ships and the Kernel averages."""
    if "members" in entry:
        return {int(member["seed"]): member["weights"] for member in entry["members"]}
    return {None: entry["weights"]}


def fold_entry(fold: int, seeds: list[int]) -> dict[str, Any]:
    """bundle.json's entry for fold `fold`: its weights (a seed bag: `members`, flat names fold<k>-seed<s>) and OOF."""
    if not seeds:
        return {"fold": fold, "weights": f"fold{fold}.safetensors", "oof": f"fold{fold}.oof.csv"}
    members = [{"seed": seed, "weights": f"fold{fold}-seed{seed}.safetensors"} for seed in seeds]
    return {"fold": fold, "members": members, "oof": f"fold{fold}.oof.csv"}


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
