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
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import bag_seeds, member_config, members
from pipeline.core.cli import config_from_args
from pipeline.core.config import (
    COMPETITION_KEYS,
    Config,
    dump_yaml,
    load_config,
    to_dict,
    training_fingerprint,
)
from pipeline.core.errors import UserError
from pipeline.core.run_config import config_of_member, config_of_run
from pipeline.inference.tta_auto import effective_views
from pipeline.kaggle import wheels
from pipeline.kaggle.bundle_format import (
    MANIFEST_FORMAT,
    check_no_evaluation_server,
    fold_entry,
    fold_weight_files,
    output_file_name,
)
from pipeline.training.checkpoint import trained_fingerprint

log = logging.getLogger(__name__)

LICENSE = "CC0-1.0"  # the client's own default; the dataset is private unless you publish it
SETTINGS_LINE = "SETTINGS: dict[str, str] = {}  # filled in by pipeline.kaggle.bundle: bundle (dataset slug), comp, exp"
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# --accelerator / KAGGLE_ACCELERATOR / kaggle.accelerator -> kernel-metadata.json's machine_shape. A plain account is
# offered T4 x2 and TPU only: NvidiaTeslaT4 is the editor's "GPU T4 x2" (a single T4 is not offered), the default.
# The P100 is retired (Kaggle silently runs a P100 request elsewhere) and the L4 is not offered to every account.
# Keys: config.ACCELERATORS.
ACCELERATORS: dict[str, str | None] = {"t4x2": "NvidiaTeslaT4", "l4": "NvidiaL4", "p100": "NvidiaTeslaP100",
                                       "none": None}  # fmt: skip
DEFAULT_ACCELERATOR = "t4x2"
DOCKER_PINNING = "original"  # kernel-metadata.json's docker_image_pinning_type: "original" or "latest"


@dataclass(frozen=True)
class KaggleNames:
    """Where the bundle lives on Kaggle: `owner/slug` refs and titles that the client accepts."""

    dataset: str
    dataset_title: str
    kernel: str
    kernel_title: str


def slugify(text: str) -> str:
    """What Kaggle's client makes of a title (python-slugify): lower case, runs of other characters -> '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _title(comp: str, exp: str, word: str) -> str:
    """`<comp> <exp> <word>` within the 6..50 characters Kaggle allows; a long competition slug is shortened."""
    room = 50 - len(exp) - len(word) - 2
    title = f"{comp[: max(room, 1)].rstrip('-_')} {exp} {word}"[:50].strip()
    return title if len(title) >= 6 else f"{title} bundle"


def kaggle_names(comp: str, exp: str, user: str) -> KaggleNames:
    dataset_title, kernel_title = _title(comp, exp, "bundle"), _title(comp, exp, "inference")
    return KaggleNames(f"{user}/{slugify(dataset_title)}", dataset_title, f"{user}/{slugify(kernel_title)}",
                       kernel_title)  # fmt: skip


def kaggle_user(explicit: str | None) -> str:
    """The Kaggle account that will own the dataset and the kernel: --user, else the credentials' username.

    With token auth the username is not in the environment: the client logs in (one call) and says whose token it is.
    """
    user = explicit
    if not user:
        from pipeline.kaggle.client import Kaggle, check_credentials  # reads files and the environment first

        try:
            user = check_credentials().username
            if not user:  # a token: its owner is what Kaggle answers when the client logs in with it
                user = Kaggle().credentials.username
        except UserError as exc:
            log.debug("no Kaggle username from the credentials: %s", exc)
            user = None
    if not user:
        raise UserError("kaggle-bundle: which Kaggle account owns the bundle? pass --user <name> "
                        "(Make: KAGGLE_USER=<name>), or set KAGGLE_API_TOKEN or KAGGLE_USERNAME")  # fmt: skip
    if not USER.fullmatch(user):
        raise UserError(f"--user {user!r}: not a Kaggle username (letters, digits, '-' and '_')")
    return user


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


def check_reloads(cfg: Config, competition: dict[str, Any], experiment: dict[str, Any]) -> None:
    """The written config must reload to the weights' fingerprint, or predict would refuse them in the Kernel."""
    with tempfile.TemporaryDirectory(prefix="bundle-config-") as tmp:
        folder = Path(tmp) / cfg.comp
        folder.mkdir()
        (folder / "competition.yaml").write_text(dump_yaml(competition))
        (folder / f"{cfg.exp}.yaml").write_text(dump_yaml(experiment))
        reloaded = load_config(folder / f"{cfg.exp}.yaml")
    if training_fingerprint(reloaded) != training_fingerprint(cfg):  # a bug, not a user mistake
        raise RuntimeError("the bundled config does not reload to the trained fingerprint")


def kernel_script(settings: dict[str, str]) -> str:
    template = resources.files("pipeline.kaggle").joinpath("kernel.py").read_text()
    if template.count(SETTINGS_LINE) != 1:
        raise RuntimeError("pipeline/kaggle/kernel.py lost its SETTINGS line")
    return template.replace(SETTINGS_LINE, f"SETTINGS: dict[str, str] = {json.dumps(settings)}")


def _place(source: Path, target: Path) -> None:
    """Put `source` at `target` by a hard link where the file system allows (instant, no space), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def metric_module_files(cfg: Config) -> dict[str, Path]:
    """A custom metric's source files as {path relative to an import root: file}: the module and its packages'
    __init__.py, so the Kernel can import it from the competition's configs folder."""
    from pipeline.core.metrics import custom_function_spec, import_function

    spec = custom_function_spec(cfg.metric)
    if spec is None:
        return {}
    module_name = spec.partition(":")[0]
    import_function(spec)  # imports the module (one `error:` line when it cannot be)
    module = sys.modules[module_name]
    source = Path(getattr(module, "__file__", None) or "")
    if source.suffix != ".py" or not source.is_file():
        raise UserError(f"metric.function: module {module_name!r} is not a .py file ({source}); the Kaggle bundle "
                        "can only ship a plain Python module: put it in the project folder or configs/")  # fmt: skip
    parts = module_name.split(".")
    relative = "/".join(
        parts[:-1] + ([parts[-1], "__init__.py"] if source.name == "__init__.py" else [parts[-1] + ".py"])
    )
    files = {relative: source}
    root = source.parent.parent if source.name == "__init__.py" else source.parent
    for depth in range(len(parts) - 1, 0, -1):  # the packages above the module
        init = root / "__init__.py"
        if init.is_file():
            files["/".join(parts[:depth] + ["__init__.py"])] = init
        root = root.parent
    return files


def module_file_name(relative: str) -> str:
    """The flat dataset name of a metric module file (Kaggle's client skips sub-folders)."""
    return "metric-module--" + relative.replace("/", "--")


def write_runtime(folder: Path) -> tuple[Path, list[str]]:
    """requirements.txt, this package's wheel and the wheels Kaggle's image lacks, into `folder`:
    (the package wheel, the other wheels' file names)."""
    requirements = wheels.runtime_requirements()
    (folder / "requirements.txt").write_text(
        "# What the inference kernel needs: the Kernel's image has most of it, the rest is bundled here (*.whl)\n"
        + "".join(f"{line}\n" for line in requirements)
    )
    package = wheels.build_package_wheel(folder)
    return package, [wheels.bundle_wheel(dist, folder).name for dist in wheels.bundled_distributions(requirements)]


def build_dataset(cfg: Config, names: KaggleNames, folder: Path) -> dict[str, Any]:
    """Fill `folder` with the dataset's files; returns the manifest (written last)."""
    out = paths.for_config(cfg)
    competition, experiment = resolved_config(cfg)
    check_reloads(cfg, competition, experiment)
    config = {"competition": "competition.yaml", "experiment": f"{cfg.exp}.yaml"}
    (folder / config["competition"]).write_text(dump_yaml(competition))
    (folder / config["experiment"]).write_text(dump_yaml(experiment))
    _place(out.folds_csv, folder / "folds.csv")
    folds = []
    for fold in range(cfg.folds.n_folds):
        entry = fold_entry(fold, bag_seeds(cfg))
        for seed, name in fold_weight_files(entry).items():  # a seed bag ships every member
            _place(out.member(seed).weights(fold), folder / name)
        _place(out.oof(fold), folder / entry["oof"])
        folds.append(entry)
    modules = {}
    for relative, source in metric_module_files(cfg).items():
        modules[module_file_name(relative)] = relative
        shutil.copyfile(source, folder / module_file_name(relative))
    package, extras = write_runtime(folder)
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


def planned_seconds(cfg: Config) -> float | None:
    """What `make plan` expects the inference kernel to take (seconds), or None when it cannot tell."""
    from pipeline.reporting.planner import DEFAULT_LIMIT, make_plan, parse_duration

    try:
        return round(float(make_plan(cfg, parse_duration(DEFAULT_LIMIT)).table["total"].iloc[0]), 1)
    except (UserError, OSError, ValueError, KeyError) as exc:  # no training log to measure speed from: no plan
        log.debug("no time plan for the bundle: %s", exc)
        return None


def choose_accelerator(cfg: Config, explicit: str | None, configured: str = "") -> str:
    """--accelerator, else $KAGGLE_ACCELERATOR, else the config's kaggle.accelerator (`configured`, validated by
    load_config), else t4x2 (none when the config's device is cpu)."""
    choice = (explicit or os.environ.get("KAGGLE_ACCELERATOR") or configured or "").strip().lower()
    if not choice:
        return "none" if cfg.device == "cpu" else DEFAULT_ACCELERATOR
    if choice not in ACCELERATORS:
        raise UserError(f"accelerator {choice!r} (--accelerator / KAGGLE_ACCELERATOR): use one of "
                        f"{', '.join(ACCELERATORS)}")  # fmt: skip
    if choice in ACCELERATOR_WARNINGS:
        log.warning("warning: %s", ACCELERATOR_WARNINGS[choice])
    return choice


ACCELERATOR_WARNINGS = {
    "p100": "accelerator p100: Kaggle retired the P100 and silently replaces it, so the kernel runs elsewhere (on "
            "what Kaggle picks, not on the GPU asked for); use t4x2, what a plain account is offered",
    "l4": "accelerator l4: Kaggle does not offer the L4 to every account (a plain one sees T4 x2 and TPU only), so "
          "the push may be refused or run elsewhere; t4x2 is offered to all",
}  # fmt: skip


def build_kernel(cfg: Config, names: KaggleNames, folder: Path, accelerator: str = DEFAULT_ACCELERATOR,
                 label: str | None = None) -> None:  # fmt: skip
    """kernel.py and kernel-metadata.json; `label`: what the kernel predicts (the experiment, or a blend's name)."""
    settings = {"bundle": names.dataset.split("/", 1)[1], "comp": cfg.comp, "exp": label or cfg.exp}
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
        "kernel_sources": [],
        "model_sources": [],
        # the image of the first run, every re-run: a rerun months later still has the torch/timm it was tested with
        "docker_image_pinning_type": DOCKER_PINNING,
    }
    if ACCELERATORS[accelerator]:
        metadata["machine_shape"] = ACCELERATORS[accelerator]
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def assemble(folder: Path, dataset: Callable[[Path], dict], kernel: Callable[[Path], None]) -> dict:
    """Build a bundle's dataset/ (`dataset` returns the manifest, written last as bundle.json) and kernel/ in a
    hidden folder beside `folder`, then rename it into place, so a half-built bundle never looks done."""
    from pipeline.core.artifacts import publish

    staging = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted build
    try:
        (staging / "dataset").mkdir(parents=True)
        (staging / "kernel").mkdir()
        manifest = dataset(staging / "dataset")
        kernel(staging / "kernel")
        (staging / "dataset" / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")  # the manifest: last
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise artifacts.write_error(staging / "dataset" / "bundle.json", exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, folder)
    return manifest


def build_bundle(cfg: Config, user: str, accelerator: str = DEFAULT_ACCELERATOR) -> Path:
    """Build data/runs/<comp>/<exp>/kaggle-bundle/ in a hidden folder, then rename it into place."""
    check_run(cfg)
    out = paths.for_config(cfg)
    names = kaggle_names(cfg.comp, cfg.exp, user)
    manifest = assemble(out.kaggle_bundle, lambda dataset: build_dataset(cfg, names, dataset),
                        lambda kernel: build_kernel(cfg, names, kernel, accelerator))  # fmt: skip
    size = sum(p.stat().st_size for p in out.kaggle_dataset.iterdir()) / 1e6
    log.info("kaggle-bundle: %s (%.1f MB: %d folds, %d wheels) -> dataset %s, kernel %s", out.kaggle_bundle, size,
             cfg.folds.n_folds, 1 + len(manifest["wheels"]), names.dataset, names.kernel)  # fmt: skip
    return out.kaggle_bundle


def run(args: argparse.Namespace) -> None:
    if getattr(args, "blend", None):
        from pipeline.core.cli import comp_from_args

        build_blend_bundle(comp_from_args(args), args.blend, kaggle_user(args.user), getattr(args, "accelerator", None))
        return
    cfg = config_of_run(args)  # what the run trained (SET included), unless SET is given now
    configured = config_from_args(
        args
    ).kaggle.accelerator  # not a training setting: the experiment yaml as it reads now
    accelerator = choose_accelerator(cfg, getattr(args, "accelerator", None), configured)
    build_bundle(cfg, kaggle_user(args.user), accelerator)


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


def add_member(cfg: Config, names: KaggleNames, folder: Path) -> dict[str, str]:
    """The member's own bundle (build_dataset) moved into `folder` under its prefix; its entry in the blend manifest."""
    prefix = f"{cfg.exp}{MEMBER_SEPARATOR}"
    with tempfile.TemporaryDirectory(prefix="bundle-member-", dir=folder.parent) as tmp:
        member = Path(tmp)
        manifest = build_dataset(cfg, names, member)
        (member / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in sorted(member.iterdir()):
            if path.suffix != ".whl" and path.name not in RUNTIME_FILES:
                os.replace(path, folder / f"{prefix}{path.name}")
    entry = {"exp": cfg.exp, "prefix": prefix, "manifest": f"{prefix}bundle.json"}
    return {**entry, "fingerprint": manifest["fingerprint"]}


def build_blend_dataset(comp: str, name: str, configs: list[Config], scores: dict[str, Any], names: KaggleNames,
                        folder: Path) -> dict[str, Any]:  # fmt: skip
    """Fill `folder` with every member's files and one set of wheels; returns the blend manifest (written last)."""
    from pipeline.core.provenance import git_commit

    members = [add_member(cfg, names, folder) for cfg in configs]
    package, extras = write_runtime(folder)
    (folder / "dataset-metadata.json").write_text(json.dumps({
        "title": names.dataset_title, "id": names.dataset, "licenses": [{"name": LICENSE}],
        "description": f"The `{name}` blend of {', '.join(scores['members'])} for the `{comp}` competition "
                       f"({scores['chosen']}, CV {scores.get('metric')} = {scores.get('cv')}): every member's fold "
                       f"weights and config, for the offline inference kernel {names.kernel}.",
    }, indent=2) + "\n")  # fmt: skip
    return {
        "format": MANIFEST_FORMAT, "kind": BLEND_KIND, "comp": comp, "exp": name, "blend": name,
        "members": members, "weights": scores["weights"], "combine": scores["combine"], "chosen": scores["chosen"],
        "method": scores.get("method"), "dataset": names.dataset, "kernel": names.kernel,
        "package": {"name": wheels.DISTRIBUTION, "version": package.name.split("-")[1], "wheel": package.name},
        "wheels": extras, "requirements": "requirements.txt", "metric": scores.get("metric"), "cv": scores.get("cv"),
        "output_file": output_file_name(configs[0].data.test_csv),
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }  # fmt: skip


def build_blend_bundle(comp: str, name: str, user: str, explicit_accelerator: str | None = None) -> Path:
    """Build data/runs/<comp>/blend/<name>/kaggle-bundle/ in a hidden folder, then rename it into place."""
    scores = blend_scores(comp, name)
    configs = check_members(comp, name, list(scores["members"]))
    accelerator = choose_accelerator(configs[0], explicit_accelerator, configs[0].kaggle.accelerator)
    place = paths.blend_bundle_place(comp, name)
    names = kaggle_names(comp, f"blend-{name}", user)
    assemble(place.folder, lambda dataset: build_blend_dataset(comp, name, configs, scores, names, dataset),
             lambda kernel: build_kernel(configs[0], names, kernel, accelerator, label=name))  # fmt: skip
    size = sum(p.stat().st_size for p in place.dataset.iterdir()) / 1e6
    log.info("kaggle-bundle: %s (%.1f MB: blend %s of %s, %s weights %s) -> dataset %s, kernel %s", place.folder, size,
             name, ", ".join(scores["members"]), scores["combine"], scores["weights"], names.dataset,
             names.kernel)  # fmt: skip
    return place.folder
