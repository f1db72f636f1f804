"""The fold weights as a versioned Kaggle Model (kaggle.weights: model, `make kaggle-push MODEL=1`): the building
block kaggle-bundle (pipeline.kaggle.bundle) and kaggle-push (pipeline.kaggle.push) share.

kaggle-bundle writes the weights into the bundle's model/ folder, beside dataset/, with the client's
model-metadata.json and model-instance-metadata.json (`write_model_metadata`); bundle.json's `weights_model` names the
instance (`owner/<comp>-<exp>-weights/pyTorch/default`) and its files. kaggle-push uploads model/ as that instance's
next version (`upload_model`: the Model and the instance are created the first time; Kaggle answers 403 for both
until then), waits until Kaggle reports that version (`wait_for_model`) and lists its files to compare them, name and
size, with model/ (`verify_model`): the client skips a file whose upload failed without a word, as for datasets. The
push record (kaggle-push.json) keeps `model`: the instance, the version and the SHA-256 of every file, so an unchanged
model/ is not uploaded again (but still checked). The kernel's model_sources then pin `<instance>/<version>`, which a
Kernel mounts at /kaggle/input/<model-slug>/<framework>/<instance-slug>/<version>/ (pipeline/kaggle/kernel.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle import calls
from pipeline.kaggle.bundle_assembly import kaggle_title, slugify
from pipeline.kaggle.bundle_format import BundleTarget
from pipeline.kaggle.dataset_upload import digests, expected_files
from pipeline.kaggle.wait import poll_seconds

log = logging.getLogger(__name__)

FRAMEWORK = "pyTorch"  # the client's name of ModelFramework.MODEL_FRAMEWORK_PY_TORCH; Kaggle mounts it as pytorch/
INSTANCE = "default"  # one instance per Model: a Model is one experiment's (or blend's) weights
LICENSE = "Apache 2.0"  # the client's own template default for a Model instance (Models take other names than datasets)


def model_names(comp: str, exp: str, user: str) -> tuple[str, str]:
    """(instance `owner/slug/framework/instance`, title) of the experiment's Kaggle Model; owner slugs are lower
    case for Models (the client checks)."""
    title = kaggle_title(comp, exp, "weights")
    return f"{user.lower()}/{slugify(title)}/{FRAMEWORK}/{INSTANCE}", title


def write_model_metadata(folder: Path, instance: str, title: str, description: str) -> None:
    """model-metadata.json and model-instance-metadata.json, which the client reads (and never uploads)."""
    owner, slug, framework, instance_slug = instance.split("/")
    (folder / "model-metadata.json").write_text(json.dumps({
        "ownerSlug": owner, "slug": slug, "title": title, "subtitle": "", "isPrivate": True,
        "description": description, "publishTime": "", "provenanceSources": "",
    }, indent=2) + "\n")  # fmt: skip
    (folder / "model-instance-metadata.json").write_text(json.dumps({
        "ownerSlug": owner, "modelSlug": slug, "instanceSlug": instance_slug, "framework": framework,
        "overview": description, "usage": "Mounted by the offline inference kernel through its model_sources.",
        "licenseName": LICENSE, "fineTunable": False, "trainingData": [], "modelInstanceType": "Unspecified",
    }, indent=2) + "\n")  # fmt: skip


def _record(target: BundleTarget) -> dict[str, Any]:
    return artifacts.read_json(target.place.pushed) if target.place.pushed.is_file() else {}


def upload_model(kaggle: Any, target: BundleTarget, instance: str, notes: str) -> int:  # noqa: ANN401
    """Upload the bundle's model/ as the next version of `instance` (creating the Model and the instance the first
    time); skipped when Kaggle already has exactly these files. Returns the version the kernel must mount."""
    folder = target.place.model
    files = digests(folder)
    current = calls.model_version(kaggle, instance)
    previous = _record(target).get("model") or {}
    if current and previous.get("instance") == instance and previous.get("files") == files:
        log.info("kaggle-push: Model %s already holds these %d files; not uploading them again (checked below)",
                 instance, len(files))  # fmt: skip
        return int(previous.get("version") or current)
    size = sum((folder / name).stat().st_size for name in files) / 1e6
    log.info("kaggle-push: uploading %d weight files (%.1f MB) as %s Kaggle Model %s", len(files), size,
             "the first version of" if not current else "a new version of", instance)  # fmt: skip
    model = "/".join(instance.split("/")[:2])
    if not current:
        if not calls.model_exists(kaggle, model):
            calls.create_model(kaggle, model, folder)
        url = calls.create_model_instance(kaggle, instance, folder)
    else:
        url = calls.create_model_version(kaggle, instance, folder, notes)
    version = (current or 0) + 1
    # "pending", not "files": nothing counts as uploaded before Kaggle lists it (verify_model)
    _write_model_record(target, {"instance": instance, "url": url, "pending": files, "version": version})
    log.info("kaggle-push: Model %s version %d accepted (%s)", instance, version, url)
    return version


def _write_model_record(target: BundleTarget, model: dict[str, Any] | None) -> None:
    record = _record(target)
    if model is None:
        record.pop("model", None)
    else:
        record["model"] = model
    artifacts.write_json(target.place.pushed, record)


def wait_for_model(kaggle: Any, instance: str, version: int, seconds: float) -> None:  # noqa: ANN401
    """Poll until Kaggle reports version `version` of `instance` (it processes an upload before it lists it)."""
    deadline = time.monotonic() + seconds
    while True:
        current = calls.model_version(kaggle, instance) or 0
        if current >= version:
            return
        if time.monotonic() >= deadline:
            raise UserError(f"Kaggle still reports version {current} of Model {instance} after {seconds:.0f} s, so "
                            "the kernel was not pushed; re-run `make kaggle-push` once "
                            f"https://www.kaggle.com/models/{'/'.join(instance.split('/')[:2])} shows version "
                            f"{version} (the files are not uploaded again)")  # fmt: skip
        log.info("kaggle-push: Model %s is at version %d; waiting for %d", instance, current, version)
        time.sleep(poll_seconds())


def verify_model(kaggle: Any, target: BundleTarget, instance: str, version: int) -> None:  # noqa: ANN401
    """Kaggle lists every file of model/, at its size, in version `version`; else UserError naming the missing ones,
    and the push record keeps nothing of the Model as uploaded (the next run uploads it again)."""
    wanted = expected_files(kaggle, target.place.model)
    listed = calls.model_files(kaggle, instance, version)
    missing = sorted(name for name in wanted if name not in listed)
    wrong = sorted(f"{name} ({listed[name]} of {wanted[name]} bytes)" for name in wanted
                   if name in listed and listed[name] and listed[name] != wanted[name])  # fmt: skip
    model = _record(target).get("model") or {}
    if missing or wrong:
        _write_model_record(target, None)
        problems = ([f"lacks {len(missing)} file(s): {', '.join(missing)}"] if missing else []) + (
            [f"holds a different size of {', '.join(wrong)}"] if wrong else [])  # fmt: skip
        raise UserError(f"Kaggle Model {instance} version {version} {'; '.join(problems)} (the client gave up on "
                        "those uploads without saying so); nothing is recorded as uploaded and the kernel was not "
                        f"pushed: re-run `make kaggle-push {target.make_args}` to upload every weight file "
                        "again")  # fmt: skip
    files = model.pop("pending", None) or model.get("files")
    _write_model_record(target, {**model, "instance": instance, "files": files, "version": version})
    log.info("kaggle-push: Kaggle lists all %d weight files of Model %s version %d", len(wanted), instance, version)
