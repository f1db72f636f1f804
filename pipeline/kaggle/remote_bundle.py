"""RUNNER=kaggle's training bundle: what every unit's notebook mounts to train one fold (or one seed-bag member).

Reads the experiment's resolved config, data/processed/<comp>/folds.csv (and test.csv), train.pseudo /
train.soft_labels sources (their scores.json, oof.csv, test.csv), lr_find.json (train.lr: auto) and a custom
metric's module; writes data/runs/<comp>/<exp>/kaggle-train/dataset/, uploaded as the private dataset
<user>/<comp>-<exp>-train (kaggle-push's upload: pipeline.kaggle.push.upload_dataset, which skips an unchanged one):

    bundle.json              kind "train": comp, exp, config files, fingerprint, the files below, wheels, `key`
    competition.yaml, <exp>.yaml, folds.csv, test.csv, lr_find.json
    file--<path>             any other file the notebook lays out under the project root (sources, metric module):
                             flat, since the client skips sub-folders; bundle.json maps each back to its path
    requirements.txt, *.whl  this package and the wheels Kaggle's image lacks (pipeline.kaggle.bundle.write_runtime)

`key` is a digest of everything the notebook's training depends on (config, folds, sources, this package's code):
a bundle with the current key is not rebuilt, so the many `remote-train` calls of one `make` build it once.
Each notebook's kernel folder (kernel.py with its SETTINGS, kernel-metadata.json) is written per push by
`write_kernel`: the competition and the dataset attached, and the kernels holding its resuming units' checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.config import COMPETITION_KEYS, TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict

# The bundle building blocks kaggle-bundle uses too (a stage imports blocks only, never the kaggle-bundle stage).
from pipeline.kaggle import bundle_assembly as inference_bundle
from pipeline.kaggle.bundle_assembly import choose_accelerator, kaggle_user  # noqa: F401 - remote-train's, re-exported
from pipeline.kaggle.bundle_format import MANIFEST_FORMAT

log = logging.getLogger(__name__)

KIND = "train"
FILE_PREFIX = "file--"


@dataclass(frozen=True)
class TrainBundle:
    """The built training dataset: its folder, manifest and Kaggle ref."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return str(self.manifest["dataset"])


def dataset_names(cfg: Config, user: str) -> tuple[str, str]:
    """(ref, title) of the experiment's training dataset."""
    title = inference_bundle.kaggle_title(cfg.comp, cfg.exp + ("" if not cfg.sample else f"-s{cfg.sample}"), "train")
    return f"{user}/{inference_bundle.slugify(title)}", title


def kernel_names(cfg: Config, unit: str, user: str) -> tuple[str, str]:
    """(ref, title) of the notebook of unit(s) `unit` (`fold0`, `fold0-seed43`, `fold0-fold1`): one kernel per unit
    or pair, a version per session. A name too long for Kaggle's 50-character title ends in a digest instead, so two
    pairs never share a kernel."""
    exp = cfg.exp + ("" if not cfg.sample else f"-s{cfg.sample}")
    if len(f"{exp} {unit} train") > 44:
        unit = f"{unit.split('-')[0]}-{hashlib.sha256(unit.encode()).hexdigest()[:8]}"
    title = inference_bundle.kaggle_title(cfg.comp, f"{exp} {unit}", "train")
    return f"{user}/{inference_bundle.slugify(title)}", title


def experiment_yaml(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(competition.yaml, experiment yaml) that reload to `cfg`'s training fingerprint, for a notebook."""
    values = to_dict(cfg)
    competition = {key: values[key] for key in COMPETITION_KEYS}
    competition["data"]["holdout"] = None  # test labels stay at home (not fingerprinted)
    experiment = {key: value for key, value in values.items() if key not in (*COMPETITION_KEYS, "comp", "exp")}
    experiment["device"] = "cpu" if cfg.device == "cpu" else "auto"
    experiment["tracking"] = "none"  # trackers sync at home, from the files that come back
    return competition, experiment


def extra_files(cfg: Config) -> dict[str, Path]:
    """{path under the project root: file here} of what training reads besides the config and folds.csv."""
    from pipeline.data.sources import resolve, source_keys

    out, root = paths.for_config(cfg), paths.project_root()
    files: dict[str, Path] = {}
    for key in source_keys(cfg):  # train.pseudo / train.soft_labels: the source's predictions
        source = resolve(cfg, key)
        for path in (source.run / "scores.json", source.oof, source.test):
            files[path.relative_to(root).as_posix()] = path
    for relative, path in inference_bundle.metric_module_files(cfg).items():
        files[(paths.configs_dir(cfg.comp) / relative).relative_to(root).as_posix()] = path
    for path in (out.test_csv, out.lr_find_json):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path
    return files


def code_digest() -> str:
    """A digest of this package's source: a changed pipeline rebuilds the bundle (its wheel)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def bundle_key(cfg: Config, texts: dict[str, str], extras: dict[str, Path]) -> str:
    out = paths.for_config(cfg)
    parts = {"texts": texts, "folds": artifacts.file_digest(out.folds_csv), "code": code_digest(),
             "extras": {name: artifacts.file_digest(path) for name, path in sorted(extras.items())}}  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def build_train_bundle(cfg: Config, user: str) -> TrainBundle:
    """data/runs/<comp>/<exp>/kaggle-train/dataset/, rebuilt only when its key changed; the bundle."""
    out = paths.for_config(cfg)
    competition, experiment = experiment_yaml(cfg)
    inference_bundle.check_reloads(cfg, competition, experiment)
    texts = {"competition.yaml": dump_yaml(competition), f"{cfg.exp}.yaml": dump_yaml(experiment)}
    extras = extra_files(cfg)
    key = bundle_key(cfg, texts, extras)
    ref, title = dataset_names(cfg, user)
    place = out.kaggle_train
    manifest_path = place / "dataset" / "bundle.json"
    if manifest_path.is_file():
        manifest = artifacts.read_json(manifest_path)
        if manifest.get("key") == key and manifest.get("dataset") == ref:
            return TrainBundle(place / "dataset", manifest)

    def dataset(folder: Path) -> dict[str, Any]:
        for name, text in texts.items():
            (folder / name).write_text(text)
        inference_bundle.place_file(out.folds_csv, folder / "folds.csv")
        files = {}
        for relative, path in extras.items():
            name = FILE_PREFIX + relative.replace("/", "--")
            inference_bundle.place_file(path, folder / name)
            files[name] = relative
        package, wheels = inference_bundle.write_runtime(folder)
        (folder / "dataset-metadata.json").write_text(json.dumps({
            "title": title, "id": ref, "licenses": [{"name": inference_bundle.LICENSE}],
            "description": f"Config, folds and wheels to train `{cfg.exp}` of `{cfg.comp}` fold by fold in Kaggle "
                           "notebooks (RUNNER=kaggle).",
        }, indent=2) + "\n")  # fmt: skip
        return {
            "format": MANIFEST_FORMAT, "kind": KIND, "comp": cfg.comp, "exp": cfg.exp, "key": key, "dataset": ref,
            "config": {"competition": "competition.yaml", "experiment": f"{cfg.exp}.yaml"}, "folds_csv": "folds.csv",
            "files": files, "fingerprint": fingerprint(cfg, TRAINING_SECTIONS), "sample": cfg.sample,
            "package": {"name": inference_bundle.wheels.DISTRIBUTION, "version": package.name.split("-")[1],
                        "wheel": package.name},
            "wheels": wheels, "requirements": "requirements.txt",
        }  # fmt: skip

    manifest = inference_bundle.assemble(place, dataset, lambda kernel, manifest: None)
    log.info("remote: training bundle %s built (dataset %s)", place / "dataset", ref)
    return TrainBundle(place / "dataset", manifest)


def write_kernel(folder: Path, cfg: Config, ref: str, title: str, settings: dict[str, Any], dataset: str,
                 accelerator: str, checkpoints: list[str]) -> None:  # fmt: skip
    """A notebook's kernel.py (SETTINGS: the dataset, units, nonce, time budget) and kernel-metadata.json;
    `checkpoints`: the kernels whose latest output holds a resuming unit's last checkpoint (attached)."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(folder / "kernel.py", inference_bundle.kernel_script(settings))
    shape = inference_bundle.ACCELERATORS[accelerator]
    metadata = {
        "id": ref, "title": title, "code_file": "kernel.py", "language": "python", "kernel_type": "script",
        "is_private": True, "enable_gpu": shape is not None, "enable_tpu": False,
        "enable_internet": bool(cfg.kaggle.internet),  # hub weights download there
        "dataset_sources": [dataset], "competition_sources": [cfg.comp],
        "kernel_sources": checkpoints,  # their latest output: the resuming units' checkpoints
        "model_sources": [],
    }  # fmt: skip
    if shape:
        metadata["machine_shape"] = shape
    artifacts.write_text(folder / "kernel-metadata.json", json.dumps(metadata, indent=2) + "\n")


def upload(kaggle: Any, cfg: Config, bundle: TrainBundle) -> None:  # noqa: ANN401 - pipeline.kaggle.client.Kaggle
    """Upload the training dataset (a new version only when its files changed) and wait until Kaggle serves it."""
    from pipeline.kaggle.bundle_format import BundleTarget
    from pipeline.kaggle.dataset_upload import upload_dataset, wait_until_ready

    out = paths.for_config(cfg)
    place = paths.BundlePlace(out.kaggle_train, out.kaggle_train / "push.json", out.kaggle_train / "output")
    target = BundleTarget(cfg.comp, cfg.exp, place, f"CONFIG=configs/{cfg.comp}/{cfg.exp}.yaml")
    version = upload_dataset(kaggle, target, bundle.manifest, f"{cfg.exp}: training bundle")
    wait_until_ready(kaggle, bundle.ref, 900.0, place.pushed, version)
