"""kaggle-push: upload the bundle as a private Kaggle dataset (a new version when it exists), then push its kernel.

Reads data/runs/<comp>/<exp>/kaggle-bundle/ (make kaggle-bundle; a blend's: data/runs/<comp>/blend/<name>/..., with
--blend NAME, Make: BLEND=<name>) and talks to Kaggle through the official client
(pipeline.kaggle.client: credentials checked first, every failure one `error:` line). Writes
data/runs/<comp>/<exp>/kaggle-push.json: the dataset ref and the SHA-256 of every file it uploaded, so a re-run with
an unchanged bundle skips the upload and only pushes the kernel. A file counts as uploaded only once Kaggle lists it:
the client gives up on a file whose upload failed (after its retries) without a word when quiet, and creates the
version without it; so once the version is ready its files are listed (`dataset_list_files`) and compared, name and
size, with the bundle's. On a mismatch kaggle-push names the missing files, records nothing as uploaded and exits 2.

The kernel is pushed only once Kaggle has processed the dataset's new version (status `ready` *and* the dataset's
current version number is the one just uploaded: the status alone can still describe the previous version), else
its run could mount the previous version; kaggle-push waits up to --wait seconds (default 900) for that. Pushing
saves a new version of the kernel, which Kaggle then runs. The kernel's dataset_sources pin the dataset version just
checked (`owner/slug/N`), so a later push never changes what an old kernel version ran. kaggle-push.json records the
kernel, the version number SaveKernel returned and when it was pushed; `make kaggle-submit` waits for that version's
run and submits exactly that version's output (pipeline.kaggle.submit_kernel).

A bundle built with kaggle.weights: model (`make kaggle-bundle kaggle-push MODEL=1`) has its fold weights in
kaggle-bundle/model/: they go up first, as the next version of the Kaggle Model instance bundle.json names
(pipeline.kaggle.model_upload: created the first time, checked like the dataset, recorded under `model` in
kaggle-push.json so an unchanged one is not uploaded again), and the kernel's model_sources pin that version.
--weights (MODEL=1) that disagrees with how the bundle was built asks for a rebuild.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle.bundle_format import BundleTarget, read_bundle, target_from_args, version_notes
from pipeline.kaggle.dataset_upload import upload_dataset, verify_upload, wait_until_ready

log = logging.getLogger(__name__)


def pinned_kernel(kernel: Path, folder: Path, dataset: str, version: int, models: list[str] | None = None) -> Path:
    """A copy of the bundle's kernel/ in `folder` whose dataset_sources pin `dataset` at `version` (and whose
    model_sources are `models`, when given): a later push never changes what this kernel version runs on."""
    for path in kernel.iterdir():
        if path.is_file():
            shutil.copyfile(path, folder / path.name)
    metadata = json.loads((kernel / "kernel-metadata.json").read_text())
    metadata["dataset_sources"] = [f"{dataset}/{version}" if source == dataset else source
                                   for source in metadata.get("dataset_sources", [])]  # fmt: skip
    if models is not None:
        metadata["model_sources"] = models
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return folder


def check_quota(kaggle: Any, manifest: dict[str, Any], kernel: dict[str, Any], force: bool = False) -> None:  # noqa: ANN401
    """Show the weekly GPU quota left; UserError (before anything is uploaded) when the planned run (bundle.json's
    planned_seconds, from `make plan`) needs more than that, or more than Kaggle's run-time limit. `force` warns."""
    from pipeline.kaggle.calls import gpu_quota
    from pipeline.reporting.planner import DEFAULT_LIMIT, MARGIN, format_hours, parse_duration

    if not kernel.get("enable_gpu"):
        return
    try:
        quota = gpu_quota(kaggle)
    except UserError as exc:  # a hint only: Kaggle decides at run time anyway
        log.warning("warning: could not read the GPU quota (%s)", exc)
        quota = None
    planned = manifest.get("planned_seconds")
    plan = f"make plan expects ~{format_hours(planned)}" if planned else "no time plan in the bundle"
    if quota is not None:
        log.info("kaggle-push: GPU quota %.1f h left of %.1f h this week (refreshes %s); %s", quota.left_hours,
                 quota.allowed_hours, quota.refresh or "weekly", plan)  # fmt: skip
    if not planned:
        return
    limit = parse_duration(DEFAULT_LIMIT) * (1 - MARGIN)
    problems = []
    if quota is not None and planned > quota.left_hours * 3600:
        problems.append(f"only {quota.left_hours:.1f} h of GPU quota are left this week (refreshes "
                        f"{quota.refresh or 'weekly'})")  # fmt: skip
    if planned > limit:
        problems.append(f"Kaggle stops a kernel after {DEFAULT_LIMIT} ({format_hours(limit)} usable)")
    if not problems:
        return
    text = f"the kernel's planned run ({plan}) does not fit: {'; '.join(problems)}"
    if force:
        log.warning("warning: %s; pushing anyway (--force)", text)
        return
    raise UserError(f"{text}; nothing was uploaded. Cut folds or TTA views (`make plan` lists what saves most), "
                    "run on CPU (--accelerator none), or push anyway with FORCE=1 (--force)")  # fmt: skip


def check_weights(target: BundleTarget, manifest: dict[str, Any], wanted: str | None) -> str | None:
    """The Model instance the bundle's weights travel in (None: in the dataset); UserError when --weights (Make:
    MODEL=1) asks for the other way than the bundle was built for: the bundle decides, so rebuild it."""
    instance = (manifest.get("weights_model") or {}).get("instance")
    built = "model" if instance else "dataset"
    if wanted and wanted != built:
        make = " MODEL=1" if wanted == "model" else ""
        raise UserError(f"--weights {wanted}: the bundle {target.place.folder} carries its weights in the {built}; "
                        f"rebuild it first: make kaggle-bundle {target.make_args}{make} (or set kaggle.weights: "
                        f"{wanted})")  # fmt: skip
    if instance and not target.place.model.is_dir():
        raise UserError(f"{target.place.model} not found, but bundle.json says the weights travel as a Kaggle Model; "
                        f"rebuild the bundle: make kaggle-bundle {target.make_args} MODEL=1")  # fmt: skip
    return instance


def push_model(kaggle: Any, target: BundleTarget, instance: str, notes: str, wait: float) -> list[str]:  # noqa: ANN401
    """Upload model/ as the next version of the Model instance, wait for it, check its files: the kernel's
    model_sources, pinned to that version."""
    from pipeline.kaggle.model_upload import upload_model, verify_model, wait_for_model

    version = upload_model(kaggle, target, instance, notes)
    wait_for_model(kaggle, instance, version, wait)
    verify_model(kaggle, target, instance, version)
    return [f"{instance}/{version}"]


def push(target: BundleTarget, wait: float, message: str | None = None, force: bool = False,
         weights: str | None = None) -> None:  # fmt: skip
    from pipeline.kaggle.client import Kaggle  # imports the client: only when Kaggle is really called

    manifest, kernel = read_bundle(target)
    instance = check_weights(target, manifest, weights)
    kaggle = Kaggle()
    owner = manifest["dataset"].split("/", 1)[0]
    user = kaggle.credentials.username
    if user and user.lower() != owner.lower():
        raise UserError(f"the bundle belongs to Kaggle user '{owner}' but the credentials are '{user}'s; rebuild it: "
                        f"make kaggle-bundle {target.make_args} KAGGLE_USER={user}")  # fmt: skip
    place = target.place
    check_quota(kaggle, manifest, kernel, force)
    notes = message or version_notes(manifest)
    models = push_model(kaggle, target, instance, notes, wait) if instance else None  # the weights first
    dataset_version = upload_dataset(kaggle, target, manifest, notes)
    wait_until_ready(kaggle, manifest["dataset"], wait, place.pushed, dataset_version)
    verify_upload(kaggle, target, dataset_version)
    pushed_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="kaggle-kernel-") as tmp:
        answer = kaggle.push_kernel(kernel["id"], pinned_kernel(place.kernel, Path(tmp), manifest["dataset"],
                                                                dataset_version, models))  # fmt: skip
    version = getattr(answer, "version_number", None)
    url = getattr(answer, "url", None) or f"https://www.kaggle.com/code/{kernel['id']}"
    record = artifacts.read_json(place.pushed) if place.pushed.is_file() else {}
    artifacts.write_json(place.pushed, {**record, "kernel": kernel["id"], "kernel_version": version,
                                        "kernel_pushed_at": pushed_at.isoformat(timespec="seconds")})  # fmt: skip
    log.info("kaggle-push: kernel %s version %s pushed and running: %s", kernel["id"], version or "?", url)
    log.info("kaggle-push: next, `make kaggle-submit %s` waits for that run and submits its submission.csv "
             "(or: kaggle competitions submit %s -k %s -f submission.csv -v %s -m '%s')", target.make_args,
             target.comp, kernel["id"], version or "<version>", version_notes(manifest))  # fmt: skip


def run(args: argparse.Namespace) -> None:
    target = target_from_args(args)  # --blend NAME: the whole blend's bundle (make kaggle-bundle BLEND=...)
    if args.wait < 0:
        raise UserError(f"--wait {args.wait}: must be 0 or more seconds")
    push(target, args.wait, args.message, force=getattr(args, "force", False), weights=getattr(args, "weights", None))
