"""The Kaggle bundle's contract between the stage that writes it (pipeline.kaggle.bundle) and the Kernel that reads it,
and reading a built bundle's manifests (kaggle-push, kaggle-submit)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from pipeline.core.config import Config

MANIFEST_FORMAT = 1  # bundle.json's layout; pipeline.commands.kernel_predict refuses others


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


@dataclass(frozen=True)
class BundleTarget:
    """What kaggle-push and kaggle-submit work on: an experiment's bundle or a whole blend's."""

    comp: str
    name: str  # the experiment, or the blend
    place: paths.BundlePlace
    make_args: str  # how the user names it to Make: CONFIG=... or COMP=... BLEND=...


def experiment_target(cfg: Config) -> BundleTarget:
    return BundleTarget(cfg.comp, cfg.exp, paths.bundle_place(paths.for_config(cfg)),
                        f"CONFIG=configs/{cfg.comp}/{cfg.exp}.yaml")  # fmt: skip


def blend_target(comp: str, name: str) -> BundleTarget:
    return BundleTarget(comp, name, paths.blend_bundle_place(comp, name), f"COMP={comp} BLEND={name}")


def target_from_args(args: argparse.Namespace) -> BundleTarget:
    """--blend NAME (with --comp or --config for the competition), else --config's experiment."""
    from pipeline.core.cli import comp_from_args, config_from_args

    if getattr(args, "blend", None):
        return blend_target(comp_from_args(args), args.blend)
    return experiment_target(config_from_args(args))


def read_bundle(target: BundleTarget) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle.json, kernel-metadata.json) of the bundle; UserError when there is none."""
    place = target.place
    if not place.manifest.is_file():
        raise UserError(f"{place.manifest} not found; run `make kaggle-bundle {target.make_args}` first")
    return artifacts.read_json(place.manifest), artifacts.read_json(place.kernel / "kernel-metadata.json")


def version_notes(manifest: dict[str, Any]) -> str:
    """The dataset version's notes, in the form `submit` gives submission descriptions."""
    from pipeline.core.provenance import describe

    commit = manifest.get("git_commit") or "unknown"
    return describe(manifest["exp"], manifest.get("metric"), manifest.get("cv"), commit)
