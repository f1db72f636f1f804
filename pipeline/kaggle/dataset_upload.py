"""Uploading a folder as a private Kaggle dataset and making sure Kaggle holds all of it: the building blocks of
kaggle-push (pipeline.kaggle.push) and RUNNER=kaggle's training bundle (pipeline.kaggle.remote_bundle).

Inputs: a logged-in pipeline.kaggle.client.Kaggle, a BundleTarget (its dataset/ folder and its push record), the
manifest. Outputs: the dataset version on Kaggle and the push record (kaggle-push.json): the dataset ref and the
SHA-256 of every file uploaded, so an unchanged folder is not uploaded again. A file counts as uploaded only once
Kaggle lists it: the client gives up on a file whose upload failed (after its retries) without a word when quiet,
and creates the version without it; so `verify_upload` lists the version's files (`dataset_list_files`) and compares
them, name and size, with the folder's. `wait_until_ready` waits until Kaggle has processed the version (status
`ready` *and* the dataset's current version number is the one just uploaded: the status alone can still describe the
previous version).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle.bundle_format import BundleTarget, read_bundle
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
    kept = {"model": previous["model"]} if "model" in previous else {}  # the weights' Model: recorded on its own
    artifacts.write_json(place.pushed, {**kept, "dataset": ref, "url": url, "notes": notes, "pending": files,
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
