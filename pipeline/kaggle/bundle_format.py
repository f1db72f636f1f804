"""The Kaggle bundle's contract between the stage that writes it (pipeline.kaggle.bundle) and the Kernel that reads it,
and reading a built bundle's manifests (kaggle-push, kaggle-submit)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from pipeline.core.config import Config

MANIFEST_FORMAT = 1  # bundle.json's layout; pipeline.commands.kernel_predict refuses others
DEFAULT_OUTPUT = "submission.csv"  # what a kernel writes when the competition's sample submission says nothing else
EVALUATION_SERVER = "kaggle_evaluation"  # the package of competitions scored through Kaggle's evaluation server


def output_file_name(sample: str | None) -> str:
    """The file a code competition wants the kernel to write: its sample submission's name without `sample`
    (sample_submission.csv -> submission.csv), else submission.csv. UserError for a format the kernel cannot write."""
    name = Path(sample or "").name
    if not re.match(r"sample", name, re.IGNORECASE):  # a plain test listing (test.csv): nothing to learn from it
        return DEFAULT_OUTPUT
    stripped = re.sub(r"^sample[_\- ]?", "", name, flags=re.IGNORECASE)
    if Path(stripped).suffix.lower() != ".csv":
        raise UserError(f"the competition's sample submission is {name}: it wants a {Path(name).suffix or 'file'} "
                        "output, and the bundle's kernel writes CSV only")  # fmt: skip
    return DEFAULT_OUTPUT if stripped.lower() == DEFAULT_OUTPUT else stripped


def check_no_evaluation_server(raw: Path, comp: str) -> None:
    """UserError when competition `comp` is scored through Kaggle's evaluation server (its data ships the
    kaggle_evaluation package): such a kernel must serve predictions through that API, not write a file."""
    folders = [raw, *(p for p in raw.iterdir() if p.is_dir())] if raw.is_dir() else []  # the zip's top, unwrapped
    found = next((f / EVALUATION_SERVER for f in folders if (f / EVALUATION_SERVER).is_dir()), None)
    if found is not None:
        raise UserError(f"'{comp}' is scored through Kaggle's evaluation server ({found} is in its "
                        "data): its kernel must answer the kaggle_evaluation API, not write a submission file, and "
                        "this pipeline's bundle does not do that; submit from a notebook built on the competition's "
                        "starter instead")  # fmt: skip


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
