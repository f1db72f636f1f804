"""kaggle-bundle: everything a Kaggle Kernel with internet off needs to predict this experiment's test set.

Reads the run's fold weights (checked against the config's fingerprint), their OOF predictions, folds.csv and
scores.json; writes data/runs/<comp>/<exp>/kaggle-bundle/:

    dataset/   uploaded by kaggle-push as the private Kaggle dataset <user>/<comp>-<exp>-bundle; flat, since the
               client skips sub-folders
        bundle.json                   the manifest: comp, exp, folds and their files, wheels, fingerprint, commit, CV
        competition.yaml, <exp>.yaml  the resolved config (data.holdout off: the Kernel has no labels)
        folds.csv, fold<k>.safetensors, fold<k>.oof.csv
                                      (a seed bag: fold<k>-seed<s>.safetensors per member, listed in the fold's
                                      `members`; the Kernel averages them like predict)
        metric-module--<a>--<b>.py    a custom metric's module (`metric: {function: "a.b:score"}`) and its packages'
                                      __init__.py, flattened; the Kernel puts them back as configs/<comp>/a/b.py
        requirements.txt              what the Kernel needs (this package's requirements, less the Kaggle client)
        *.whl                         this package + the dependencies Kaggle's image lacks (pipeline.kaggle.wheels)
        dataset-metadata.json         the Kaggle client's dataset metadata (id, title, license)
    kernel/    pushed by kaggle-push as the script kernel <user>/<comp>-<exp>-inference
        kernel.py                     pipeline/kaggle/kernel.py with its SETTINGS filled in
        kernel-metadata.json          competition + dataset sources, internet off, the accelerator (`ACCELERATORS`)

model.pretrained stays as trained: it is part of the fingerprint that predict checks against the weights, and
predict builds the model with pretrained=False, so a Kernel never looks for those weights. The bundle is built in a
hidden folder beside its place and renamed into it, so a half-built bundle never looks done; the same run gives
byte-identical dataset files, which lets kaggle-push skip an upload that would change nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import bag_seeds, member_config, members
from pipeline.core.cli import config_from_args
from pipeline.core.config import COMPETITION_KEYS, Config, dump_yaml, to_dict, training_fingerprint
from pipeline.core.errors import UserError
from pipeline.core.run_config import config_of_member, config_of_run
from pipeline.inference.tta_auto import effective_views
from pipeline.kaggle import wheels
from pipeline.kaggle.bundle_assembly import (
    ACCELERATORS,
    DEFAULT_ACCELERATOR,
    DOCKER_PINNING,
    LICENSE,
    KaggleNames,
    assemble,
    check_reloads,
    choose_accelerator,
    kaggle_names,
    kaggle_user,
    kernel_script,
    metric_module_files,
    module_file_name,
    place_file,
    wheels_notebook,
    write_runtime_with,
)
from pipeline.kaggle.bundle_format import (
    MANIFEST_FORMAT,
    check_no_evaluation_server,
    fold_entry,
    fold_weight_files,
    output_file_name,
)
from pipeline.kaggle.model_upload import model_names, write_model_metadata
from pipeline.training.checkpoint import trained_fingerprint

log = logging.getLogger(__name__)


def check_run(cfg: Config) -> None:
    """Every fold is trained under this config and predicted; UserError naming what is missing otherwise."""
    out = paths.for_config(cfg)
    if cfg.sample:
        raise UserError(f"kaggle-bundle: a sample run (sample={cfg.sample}) predicts only part of the test set and "
                        "Kaggle would refuse its submission; bundle the full run (drop SAMPLE)")  # fmt: skip
    if cfg.ensemble.refit:  # the Kernel's ensemble would look for refit/test.csv, which the bundle does not ship
        raise UserError("kaggle-bundle: ensemble.refit is true, but the bundle ships the folds only (not the full-data "
                        "refit); bundle with --set ensemble.refit=false (SET=ensemble.refit=false)")  # fmt: skip
    for fold in range(cfg.folds.n_folds):
        for seed in members(cfg):  # a seed bag: every member, under its own config
            weights = out.member(seed).weights(fold)
            if not weights.is_file():
                raise UserError(f"{weights} not found; run `make train CONFIG=...` first")
            if trained_fingerprint(weights) != training_fingerprint(member_config(cfg, seed)):
                raise UserError(f"{weights} was trained under a different config; retrain it or restore that config")
        if not out.oof(fold).is_file():
            raise UserError(f"{out.oof(fold)} not found; run `make predict CONFIG=...` first")
    for path in (out.folds_csv, out.scores):
        if not path.is_file():
            raise UserError(f"{path} not found; run `make ensemble CONFIG=...` first")
    check_no_evaluation_server(paths.raw_dir(cfg.comp), cfg.comp)


def resolved_config(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(competition.yaml, experiment yaml) values that reload to `cfg`, adjusted for a Kernel (not fingerprinted)."""
    values = to_dict(cfg)
    competition = {key: values[key] for key in COMPETITION_KEYS}
    competition["data"]["holdout"] = None  # test labels stay at home
    experiment = {key: value for key, value in values.items() if key not in (*COMPETITION_KEYS, "comp", "exp")}
    experiment["device"] = "cpu" if cfg.device == "cpu" else "auto"  # mps at home -> the Kernel's GPU if it has one
    experiment["tta"]["views"] = effective_views(cfg)  # auto: the views ensemble chose, which the fold OOF holds
    return competition, experiment


def build_dataset(cfg: Config, names: KaggleNames, folder: Path, weights: Path | None = None) -> dict[str, Any]:
    """Fill `folder` with the dataset's files (the fold weights into `weights` when given: a Kaggle Model's); returns
    the manifest (written last)."""
    out = paths.for_config(cfg)
    competition, experiment = resolved_config(cfg)
    check_reloads(cfg, competition, experiment)
    config = {"competition": "competition.yaml", "experiment": f"{cfg.exp}.yaml"}
    (folder / config["competition"]).write_text(dump_yaml(competition))
    (folder / config["experiment"]).write_text(dump_yaml(experiment))
    place_file(out.folds_csv, folder / "folds.csv")
    folds = []
    for fold in range(cfg.folds.n_folds):
        entry = fold_entry(fold, bag_seeds(cfg))
        for seed, name in fold_weight_files(entry).items():  # a seed bag ships every member
            place_file(out.member(seed).weights(fold), (weights or folder) / name)
        place_file(out.oof(fold), folder / entry["oof"])
        folds.append(entry)
    modules = {}
    for relative, source in metric_module_files(cfg).items():
        modules[module_file_name(relative)] = relative
        shutil.copyfile(source, folder / module_file_name(relative))
    package, extras, runtime = runtime_with_notebook(cfg.comp, folder)
    scores = artifacts.read_json(out.scores)
    from pipeline.core.provenance import git_commit

    manifest = {
        "format": MANIFEST_FORMAT,
        "comp": cfg.comp,
        "exp": cfg.exp,
        "n_folds": cfg.folds.n_folds,
        "model": cfg.model.name,
        "fingerprint": training_fingerprint(cfg),
        "dataset": names.dataset,
        "kernel": names.kernel,
        "package": {"name": wheels.DISTRIBUTION, "version": package.name.split("-")[1], "wheel": package.name},
        "wheels": extras,
        "requirements": "requirements.txt",
        "config": config,
        "folds_csv": "folds.csv",
        "folds": folds,
        "metric_modules": modules,  # {dataset file: path under the competition's configs folder}
        "metric": scores.get("metric"),
        "cv": scores.get("cv"),
        "output_file": output_file_name(cfg.data.test_csv),  # what the kernel writes and kaggle-submit submits
        **runtime,  # kaggle_wheels: what the wheels notebook (make kaggle-wheels) brings instead
        "planned_seconds": planned_seconds(cfg),  # make plan's inference kernel: kaggle-push checks the GPU quota
        "git_commit": git_commit(Path(__file__).resolve().parent),  # the code's commit, wherever the project is
    }
    (folder / "dataset-metadata.json").write_text(json.dumps({
        "title": names.dataset_title,
        "id": names.dataset,
        "licenses": [{"name": LICENSE}],
        "description": f"Fold weights, config and wheels of the `{cfg.exp}` experiment for the `{cfg.comp}` "
                       f"competition ({cfg.model.name}, {cfg.folds.n_folds} folds, CV {scores.get('metric')} = "
                       f"{scores.get('cv')}), for the offline inference kernel {names.kernel}.",
    }, indent=2) + "\n")  # fmt: skip
    return manifest


def runtime_with_notebook(comp: str, folder: Path) -> tuple[Path, list[str], dict[str, Any]]:
    """write_runtime, where the wheels `make kaggle-wheels` built on Kaggle need not be fetched: (the package wheel,
    the bundled wheels, the manifest's `kaggle_wheels` entry: the notebook the kernel mounts and what it brings)."""
    notebook = wheels_notebook(comp)
    package, extras, from_kaggle = write_runtime_with(folder, notebook["requirements"] if notebook else ())
    entry = {"kaggle_wheels": {"kernel": notebook["kernel"], "requirements": from_kaggle}} if from_kaggle else {}
    return package, extras, entry


def planned_seconds(cfg: Config) -> float | None:
    """What `make plan` expects the inference kernel to take (seconds), or None when it cannot tell."""
    from pipeline.reporting.planner import DEFAULT_LIMIT, make_plan, parse_duration

    try:
        return round(float(make_plan(cfg, parse_duration(DEFAULT_LIMIT)).table["total"].iloc[0]), 1)
    except (UserError, OSError, ValueError, KeyError) as exc:  # no training log to measure speed from: no plan
        log.debug("no time plan for the bundle: %s", exc)
        return None


def build_kernel(cfg: Config, names: KaggleNames, folder: Path, accelerator: str = DEFAULT_ACCELERATOR,
                 label: str | None = None, manifest: dict[str, Any] | None = None) -> None:  # fmt: skip
    """kernel.py and kernel-metadata.json; `label`: what the kernel predicts (the experiment, or a blend's name);
    `manifest`: the dataset's, whose wheels notebook (make kaggle-wheels) the kernel mounts through kernel_sources."""
    settings = {"bundle": names.dataset.split("/", 1)[1], "comp": cfg.comp, "exp": label or cfg.exp}
    notebook = (manifest or {}).get("kaggle_wheels")
    (folder / "kernel.py").write_text(kernel_script(settings))
    metadata = {
        "id": names.kernel,
        "title": names.kernel_title,
        "code_file": "kernel.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": ACCELERATORS[accelerator] is not None,
        "enable_tpu": False,
        "enable_internet": False,  # code competitions require it off; the bundle brings what pip would fetch
        "dataset_sources": [names.dataset],
        "competition_sources": [cfg.comp],
        "kernel_sources": [notebook["kernel"]] if notebook else [],  # make kaggle-wheels' output: more wheels
        "model_sources": [],  # kaggle-push pins the weights' Kaggle Model version here (kaggle.weights: model)
        # the image of the first run, every re-run: a rerun months later still has the torch/timm it was tested with
        "docker_image_pinning_type": DOCKER_PINNING,
    }
    if ACCELERATORS[accelerator]:
        metadata["machine_shape"] = ACCELERATORS[accelerator]
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def model_folder(dataset: Path, travel: str) -> Path | None:
    """Where the weights go: None (the dataset) or, for kaggle.weights: model, model/ beside the staged dataset/
    (assemble renames the whole staging folder into place)."""
    if travel != "model":
        return None
    folder = dataset.parent / "model"
    folder.mkdir()
    return folder


def with_model(manifest: dict[str, Any], names: KaggleNames, weights: Path | None) -> dict[str, Any]:
    """The manifest, and for weights that travel as a Kaggle Model its `weights_model` entry (the instance and its
    files) and the client's metadata files in `weights`."""
    if weights is None:
        return manifest
    exp = f"blend-{manifest['exp']}" if manifest.get("kind") == BLEND_KIND else manifest["exp"]
    instance, title = model_names(manifest["comp"], exp, names.dataset.split("/", 1)[0])
    files = sorted(p.name for p in weights.iterdir())
    write_model_metadata(weights, instance, title, f"Fold weights of `{manifest['exp']}` for `{manifest['comp']}` "
                         f"(CV {manifest.get('metric')} = {manifest.get('cv')}), for the inference kernel "
                         f"{names.kernel}; config and wheels: the dataset {names.dataset}.")  # fmt: skip
    return {**manifest, "weights_model": {"instance": instance, "files": files}}


def build_bundle(cfg: Config, user: str, accelerator: str = DEFAULT_ACCELERATOR, travel: str = "dataset") -> Path:
    """Build data/runs/<comp>/<exp>/kaggle-bundle/ in a hidden folder, then rename it into place; `travel`: how the
    weights go (kaggle.weights: dataset, or model: a Kaggle Model uploaded from kaggle-bundle/model/)."""
    check_run(cfg)
    out = paths.for_config(cfg)
    names = kaggle_names(cfg.comp, cfg.exp, user)

    def dataset(folder: Path) -> dict[str, Any]:
        weights = model_folder(folder, travel)
        return with_model(build_dataset(cfg, names, folder, weights), names, weights)

    manifest = assemble(
        out.kaggle_bundle,
        dataset,
        lambda kernel, manifest: build_kernel(cfg, names, kernel, accelerator, manifest=manifest),
    )
    size = sum(p.stat().st_size for p in out.kaggle_dataset.iterdir()) / 1e6
    log.info("kaggle-bundle: %s (%.1f MB: %d folds, %d wheels) -> dataset %s, kernel %s", out.kaggle_bundle, size,
             cfg.folds.n_folds, 1 + len(manifest["wheels"]), names.dataset, names.kernel)  # fmt: skip
    return out.kaggle_bundle


def run(args: argparse.Namespace) -> None:
    if getattr(args, "blend", None):
        from pipeline.core.cli import comp_from_args

        build_blend_bundle(comp_from_args(args), args.blend, kaggle_user(args.user), getattr(args, "accelerator", None),
                           getattr(args, "weights", None))  # fmt: skip
        return
    cfg = config_of_run(args)  # what the run trained (SET included), unless SET is given now
    configured = config_from_args(args).kaggle  # not training settings: the experiment yaml as it reads now
    accelerator = choose_accelerator(cfg, getattr(args, "accelerator", None), configured.accelerator)
    build_bundle(cfg, kaggle_user(args.user), accelerator, getattr(args, "weights", None) or configured.weights)


# A whole blend (make kaggle-bundle BLEND=<name>): every member's own bundle files, side by side in one flat dataset
# under the prefix `<exp>--` (each member's bundle.json as <exp>--bundle.json, unchanged), one set of wheels, and a
# top-level bundle.json of kind "blend": the members, the weights and the combine method of the blend's scores.json.
BLEND_KIND = "blend"
MEMBER_SEPARATOR = "--"
RUNTIME_FILES = ("requirements.txt", "dataset-metadata.json")  # per member: replaced by the blend's one set


def blend_scores(comp: str, name: str) -> dict[str, Any]:
    """The blend's scores.json, checked current against blend.yaml and its members' files (one `error:` line)."""
    from pipeline.inference.blend_apply import check_current

    path = paths.Paths(comp).blend_scores(name)
    if not path.is_file():
        raise UserError(f"{path} not found; run `make blend COMP={comp}` with `name: {name}` in "
                        f"{paths.blend_config(comp)} first")  # fmt: skip
    scores = artifacts.read_json(path)
    check_current(comp, name, scores, paths.blend_config(comp))
    return scores


def check_members(comp: str, name: str, members: list[str]) -> list[Config]:
    """Every member bundles as a single experiment would, and all share one competition and test listing."""
    from pipeline.data.tables import read_csv

    configs, first_competition, first_ids = [], None, None
    for exp in members:
        cfg = config_of_member(comp, exp, "kaggle-bundle")
        where = f"kaggle-bundle BLEND={name}"
        if cfg.ensemble.refit:
            raise UserError(f"{where}: member {exp} has ensemble.refit: true, and the bundle ships folds only; set "
                            f"ensemble.refit: false in configs/{comp}/{exp}.yaml, then `make ensemble "
                            f"CONFIG=configs/{comp}/{exp}.yaml` and `make blend COMP={comp}`")  # fmt: skip
        check_run(cfg)
        competition = resolved_config(cfg)[0]
        ids = list(read_csv(paths.for_config(cfg).test_blend, "test probabilities")["id"])
        if first_competition is not None and competition != first_competition:
            differ = ", ".join(sorted(k for k in competition if competition[k] != first_competition[k]))
            raise UserError(f"{where}: members {members[0]} and {exp} were trained under different competition "
                            f"settings ({differ}); retrain one under the other's")  # fmt: skip
        if first_ids is not None and ids != first_ids:
            raise UserError(f"{where}: {exp} predicted other test ids than {members[0]}; re-run predict and "
                            f"ensemble on the same test listing, then `make blend COMP={comp}`")  # fmt: skip
        configs.append(cfg)
        first_competition, first_ids = first_competition or competition, first_ids or ids
    return configs


def add_member(cfg: Config, names: KaggleNames, folder: Path, weights: Path | None = None) -> dict[str, str]:
    """The member's own bundle (build_dataset) moved into `folder` under its prefix (its weights into `weights` when
    given: the blend's Kaggle Model); its entry in the blend manifest."""
    prefix = f"{cfg.exp}{MEMBER_SEPARATOR}"
    with (tempfile.TemporaryDirectory(prefix="bundle-member-", dir=folder.parent) as tmp,
          tempfile.TemporaryDirectory(prefix="bundle-member-weights-", dir=folder.parent) as tmp_weights):  # fmt: skip
        member = Path(tmp)
        manifest = build_dataset(cfg, names, member, Path(tmp_weights) if weights else None)
        (member / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in sorted(member.iterdir()):
            if path.suffix != ".whl" and path.name not in RUNTIME_FILES:
                os.replace(path, folder / f"{prefix}{path.name}")
        for path in sorted(Path(tmp_weights).iterdir()):
            os.replace(path, (weights or folder) / f"{prefix}{path.name}")
    entry = {"exp": cfg.exp, "prefix": prefix, "manifest": f"{prefix}bundle.json"}
    return {**entry, "fingerprint": manifest["fingerprint"]}


def build_blend_dataset(comp: str, name: str, configs: list[Config], scores: dict[str, Any], names: KaggleNames,
                        folder: Path, travel: str = "dataset") -> dict[str, Any]:  # fmt: skip
    """Fill `folder` with every member's files and one set of wheels (the weights into model/ beside it for
    kaggle.weights: model); returns the blend manifest (written last)."""
    from pipeline.core.provenance import git_commit

    weights = model_folder(folder, travel)
    members = [add_member(cfg, names, folder, weights) for cfg in configs]
    package, extras, runtime = runtime_with_notebook(comp, folder)
    (folder / "dataset-metadata.json").write_text(json.dumps({
        "title": names.dataset_title, "id": names.dataset, "licenses": [{"name": LICENSE}],
        "description": f"The `{name}` blend of {', '.join(scores['members'])} for the `{comp}` competition "
                       f"({scores['chosen']}, CV {scores.get('metric')} = {scores.get('cv')}): every member's fold "
                       f"weights and config, for the offline inference kernel {names.kernel}.",
    }, indent=2) + "\n")  # fmt: skip
    return with_model({
        "format": MANIFEST_FORMAT, "kind": BLEND_KIND, "comp": comp, "exp": name, "blend": name,
        "members": members, "weights": scores["weights"], "combine": scores["combine"], "chosen": scores["chosen"],
        "decision": scores.get("decision"),  # the blend's per-class logit offsets (prior shift), or none
        "method": scores.get("method"), "dataset": names.dataset, "kernel": names.kernel,
        "package": {"name": wheels.DISTRIBUTION, "version": package.name.split("-")[1], "wheel": package.name},
        "wheels": extras, "requirements": "requirements.txt", "metric": scores.get("metric"), "cv": scores.get("cv"),
        "output_file": output_file_name(configs[0].data.test_csv), **runtime,
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }, names, weights)  # fmt: skip


def build_blend_bundle(comp: str, name: str, user: str, explicit_accelerator: str | None = None,
                       travel: str | None = None) -> Path:  # fmt: skip
    """Build data/runs/<comp>/blend/<name>/kaggle-bundle/ in a hidden folder, then rename it into place."""
    scores = blend_scores(comp, name)
    configs = check_members(comp, name, list(scores["members"]))
    accelerator = choose_accelerator(configs[0], explicit_accelerator, configs[0].kaggle.accelerator)
    travel = travel or configs[0].kaggle.weights
    place = paths.blend_bundle_place(comp, name)
    names = kaggle_names(comp, f"blend-{name}", user)
    assemble(place.folder, lambda dataset: build_blend_dataset(comp, name, configs, scores, names, dataset, travel),
             lambda kernel, manifest: build_kernel(configs[0], names, kernel, accelerator, label=name,
                                                   manifest=manifest))  # fmt: skip
    size = sum(p.stat().st_size for p in place.dataset.iterdir()) / 1e6
    log.info("kaggle-bundle: %s (%.1f MB: blend %s of %s, %s weights %s) -> dataset %s, kernel %s", place.folder, size,
             name, ", ".join(scores["members"]), scores["combine"], scores["weights"], names.dataset,
             names.kernel)  # fmt: skip
    return place.folder
