"""kaggle-push: upload the bundle as a private Kaggle dataset (a new version when it exists), then push its kernel.

Reads data/runs/<comp>/<exp>/kaggle-bundle/ (make kaggle-bundle) and talks to Kaggle through the official client
(pipeline.kaggle_api: credentials checked first, every failure one `error:` line). Writes
data/runs/<comp>/<exp>/kaggle-push.json once the upload is accepted: the dataset ref and the SHA-256 of every file
it uploaded, so a re-run with an unchanged bundle skips the upload and only pushes the kernel.

The kernel is pushed only once Kaggle has processed the dataset (status `ready`), else its run could mount the
previous version; kaggle-push waits up to --wait seconds (default 900) for that. Pushing saves a new version of the
kernel, which Kaggle then runs; its /kaggle/working/submission.csv is submitted from the competition's page, or
with `kaggle competitions submit <comp> -k <owner>/<kernel> -f submission.csv -v <version> -m <message>`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from pipeline import artifacts, paths
from pipeline.cli import config_from_args
from pipeline.config import Config
from pipeline.errors import UserError

log = logging.getLogger(__name__)

POLL_SECONDS = 10.0
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


def read_bundle(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bundle.json, kernel-metadata.json) of the experiment's bundle; UserError when there is none."""
    out = paths.for_config(cfg)
    if not out.kaggle_manifest.is_file():
        raise UserError(f"{out.kaggle_manifest} not found; run `make kaggle-bundle CONFIG=...` first")
    return artifacts.read_json(out.kaggle_manifest), artifacts.read_json(out.kaggle_kernel / "kernel-metadata.json")


def version_notes(manifest: dict[str, Any]) -> str:
    """The dataset version's notes, in the form `submit` gives submission descriptions."""
    from pipeline.provenance import describe

    commit = manifest.get("git_commit") or "unknown"
    return describe(manifest["exp"], manifest.get("metric"), manifest.get("cv"), commit)


def upload_dataset(kaggle: Any, cfg: Config, manifest: dict[str, Any], notes: str) -> None:  # noqa: ANN401 - Kaggle
    """Create the dataset, or add a version to it; skipped when Kaggle already has exactly these files."""
    out = paths.for_config(cfg)
    ref = manifest["dataset"]
    files = digests(out.kaggle_dataset)
    status = kaggle.dataset_status(ref)
    previous = artifacts.read_json(out.kaggle_pushed) if out.kaggle_pushed.is_file() else {}
    if status is not None and previous.get("dataset") == ref and previous.get("files") == files:
        log.info("kaggle-push: dataset %s already holds these %d files; not uploading them again", ref, len(files))
        return
    size = sum((out.kaggle_dataset / name).stat().st_size for name in files) / 1e6
    log.info("kaggle-push: uploading %d files (%.1f MB) to %s dataset %s", len(files), size,
             "a new" if status is None else "a new version of", ref)  # fmt: skip
    if status is None:
        url = kaggle.create_dataset(ref, out.kaggle_dataset)
    else:
        url = kaggle.create_dataset_version(ref, out.kaggle_dataset, notes)
    artifacts.write_json(out.kaggle_pushed, {"dataset": ref, "url": url, "notes": notes, "files": files})
    log.info("kaggle-push: dataset %s accepted (%s)", ref, url)


def wait_until_ready(kaggle: Any, ref: str, seconds: float, record: Path) -> None:  # noqa: ANN401 - Kaggle
    """Poll the dataset's status until Kaggle has processed it; UserError when it fails or takes too long.

    When processing failed, `record` (kaggle-push.json) goes too, so the next run uploads the files again.
    """
    deadline = time.monotonic() + seconds
    while True:
        status = kaggle.dataset_status(ref)
        if status == DONE:
            return
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
        time.sleep(POLL_SECONDS)


def push(cfg: Config, wait: float, message: str | None = None) -> None:
    from pipeline.kaggle_api import Kaggle  # imports the client: only when Kaggle is really called

    manifest, kernel = read_bundle(cfg)
    kaggle = Kaggle()
    owner = manifest["dataset"].split("/", 1)[0]
    user = kaggle.credentials.username
    if user and user.lower() != owner.lower():
        raise UserError(f"the bundle belongs to Kaggle user '{owner}' but the credentials are '{user}'s; rebuild it: "
                        f"make kaggle-bundle CONFIG=... KAGGLE_USER={user}")  # fmt: skip
    upload_dataset(kaggle, cfg, manifest, message or version_notes(manifest))
    wait_until_ready(kaggle, manifest["dataset"], wait, paths.for_config(cfg).kaggle_pushed)
    answer = kaggle.push_kernel(kernel["id"], paths.for_config(cfg).kaggle_kernel)
    version = getattr(answer, "version_number", None)
    url = getattr(answer, "url", None) or f"https://www.kaggle.com/code/{kernel['id']}"
    log.info("kaggle-push: kernel %s version %s pushed and running: %s", kernel["id"], version or "?", url)
    log.info("kaggle-push: once it has run, submit its output from the competition page, or: kaggle competitions "
             "submit %s -k %s -f submission.csv -v %s -m '%s'", cfg.comp, kernel["id"], version or "<version>",
             version_notes(manifest))  # fmt: skip


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    if args.wait < 0:
        raise UserError(f"--wait {args.wait}: must be 0 or more seconds")
    push(cfg, args.wait, args.message)
