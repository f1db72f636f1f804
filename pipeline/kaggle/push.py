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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle.bundle_format import BundleTarget, read_bundle, target_from_args, version_notes
from pipeline.kaggle.wait import poll_seconds

log = logging.getLogger(__name__)

DONE = "ready"
BROKEN = ("failed", "deleted")


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file the client uploads from `folder` (it skips sub-folders), by name."""
    found = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        found[path.name] = digest.hexdigest()
    return found


def upload_dataset(kaggle: Any, target: BundleTarget, manifest: dict[str, Any], notes: str) -> int:  # noqa: ANN401
    """Create the dataset, or add a version to it; skipped when Kaggle already has exactly these files.

    Returns the version number the kernel must see: the new one, or the current one when nothing was uploaded."""
    place = target.place
    ref = manifest["dataset"]
    files = digests(place.dataset)
    status = kaggle.dataset_status(ref)
    current = kaggle.dataset_version(ref)[1] if status is not None else 0
    previous = artifacts.read_json(place.pushed) if place.pushed.is_file() else {}
    if status is not None and previous.get("dataset") == ref and previous.get("files") == files:
        log.info("kaggle-push: dataset %s already holds these %d files; not uploading them again (checked below)",
                 ref, len(files))  # fmt: skip
        return int(previous.get("version") or current)
    size = sum((place.dataset / name).stat().st_size for name in files) / 1e6
    log.info("kaggle-push: uploading %d files (%.1f MB) to %s dataset %s", len(files), size,
             "a new" if status is None else "a new version of", ref)  # fmt: skip
    if status is None:
        url = kaggle.create_dataset(ref, place.dataset)
    else:
        url = kaggle.create_dataset_version(ref, place.dataset, notes)
    version = current + 1
    # "pending", not "files": nothing counts as uploaded before Kaggle lists it (verify_upload)
    artifacts.write_json(place.pushed, {"dataset": ref, "url": url, "notes": notes, "pending": files,
                                        "version": version})  # fmt: skip
    log.info("kaggle-push: dataset %s version %d accepted (%s)", ref, version, url)
    return version


def expected_files(kaggle: Any, folder: Path) -> dict[str, int]:  # noqa: ANN401
    """{name: size} of what the client uploads from `folder`: every file but the metadata files it reads itself."""
    api = kaggle.api
    skipped = {getattr(api, name, "") for name in ("DATASET_METADATA_FILE", "OLD_DATASET_METADATA_FILE",
                                                   "KERNEL_METADATA_FILE", "MODEL_METADATA_FILE",
                                                   "MODEL_INSTANCE_METADATA_FILE")}  # fmt: skip
    skipped |= set(getattr(api, "DATASET_COVER_IMAGE_FILES", []) or []) | {"dataset-metadata.json"}
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name not in skipped}


def verify_upload(kaggle: Any, target: BundleTarget, version: int) -> None:  # noqa: ANN401
    """Kaggle lists every bundle file, at its size, in dataset version `version`; else UserError naming the missing
    ones, and kaggle-push.json keeps nothing as uploaded (the next run uploads every file again)."""
    from pipeline.kaggle.calls import dataset_files

    place = target.place
    record = artifacts.read_json(place.pushed) if place.pushed.is_file() else {}
    ref = record.get("dataset") or read_bundle(target)[0]["dataset"]
    wanted = expected_files(kaggle, place.dataset)
    listed = dataset_files(kaggle, ref, version)
    missing = sorted(name for name in wanted if name not in listed)
    wrong = sorted(f"{name} ({listed[name]} of {wanted[name]} bytes)" for name in wanted
                   if name in listed and listed[name] and listed[name] != wanted[name])  # fmt: skip
    if missing or wrong:
        record.pop("files", None)
        record.pop("pending", None)
        if record:
            artifacts.write_json(place.pushed, record)
        problems = ([f"lacks {len(missing)} file(s): {', '.join(missing)}"] if missing else []) + (
            [f"holds a different size of {', '.join(wrong)}"] if wrong else [])  # fmt: skip
        raise UserError(f"dataset {ref} version {version} {'; '.join(problems)} (the client gave up on those uploads "
                        f"without saying so); nothing is recorded as uploaded and the kernel was not pushed: re-run "
                        f"`make kaggle-push {target.make_args}` to upload every file again")  # fmt: skip
    files = record.pop("pending", None) or record.get("files")
    artifacts.write_json(place.pushed, {**record, "files": files, "version": version})
    log.info("kaggle-push: Kaggle lists all %d files of dataset %s version %d", len(wanted), ref, version)


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


def wait_until_ready(kaggle: Any, ref: str, seconds: float, record: Path, version: int = 0) -> None:  # noqa: ANN401
    """Poll the dataset until Kaggle has processed version `version`; UserError when it fails or takes too long.

    When processing failed, `record` (kaggle-push.json) goes too, so the next run uploads the files again.
    """
    deadline = time.monotonic() + seconds
    while True:
        status, current = kaggle.dataset_version(ref)
        if status == DONE and current >= version:
            return
        if status == DONE:
            status = f"ready, but at version {current} (waiting for {version})"
        if status in BROKEN:
            record.unlink(missing_ok=True)
            raise UserError(f"Kaggle could not process dataset {ref} (status {status}); see "
                            f"https://www.kaggle.com/datasets/{ref}, then re-run kaggle-push")  # fmt: skip
        if time.monotonic() >= deadline:
            raise UserError(
                f"dataset {ref} is still being processed by Kaggle (status {status}) after {seconds:.0f} s, so the "
                f"kernel was not pushed; re-run `make kaggle-push` when https://www.kaggle.com/datasets/{ref} shows "
                "the new version (the files are not uploaded again)"
            )
        log.info("kaggle-push: dataset %s is %s; waiting", ref, status)
        time.sleep(poll_seconds())


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


def push(target: BundleTarget, wait: float, message: str | None = None, force: bool = False) -> None:
    from pipeline.kaggle.client import Kaggle  # imports the client: only when Kaggle is really called

    manifest, kernel = read_bundle(target)
    kaggle = Kaggle()
    owner = manifest["dataset"].split("/", 1)[0]
    user = kaggle.credentials.username
    if user and user.lower() != owner.lower():
        raise UserError(f"the bundle belongs to Kaggle user '{owner}' but the credentials are '{user}'s; rebuild it: "
                        f"make kaggle-bundle {target.make_args} KAGGLE_USER={user}")  # fmt: skip
    place = target.place
    check_quota(kaggle, manifest, kernel, force)
    dataset_version = upload_dataset(kaggle, target, manifest, message or version_notes(manifest))
    wait_until_ready(kaggle, manifest["dataset"], wait, place.pushed, dataset_version)
    verify_upload(kaggle, target, dataset_version)
    pushed_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="kaggle-kernel-") as tmp:
        answer = kaggle.push_kernel(kernel["id"], pinned_kernel(place.kernel, Path(tmp), manifest["dataset"],
                                                                dataset_version))  # fmt: skip
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
    push(target, args.wait, args.message, force=getattr(args, "force", False))
