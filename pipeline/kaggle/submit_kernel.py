"""kaggle-submit: a code competition's submission, after kaggle-push: the pushed kernel's run, its output, the score.

Reads data/runs/<comp>/<exp>/kaggle-push.json (the kernel ref and version kaggle-push pushed) and the bundle's
kernel-metadata.json. Waits for that kernel run (`kernels_status`, up to --kernel-wait seconds, progress in the
log); when it failed, downloads its log (`kernels_output`) into data/runs/<comp>/<exp>/kaggle-kernel-output/ and
shows its last lines; when it completed, submits that kernel version's submission.csv
(`competition_submit_code`), then waits for the score like submit does (--wait, Make's WAIT; 0 skips).
With --blend NAME (Make: BLEND=<name>) the same files of the blend's bundle, under data/runs/<comp>/blend/<name>/.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle import wait as kaggle_wait
from pipeline.kaggle.wait import log_tail  # noqa: F401 - also used here, and imported from here by older callers

log = logging.getLogger(__name__)

OUTPUT_FILE = "submission.csv"  # what pipeline.commands.kernel_predict writes into /kaggle/working


def pushed_kernel(record: Path, make_args: str = "CONFIG=...") -> tuple[str, int | None]:
    """(kernel ref, version) that kaggle-push recorded; UserError when nothing was pushed yet."""
    values = artifacts.read_json(record) if record.is_file() else {}
    if not values.get("kernel"):
        raise UserError(f"{record} names no pushed kernel; run `make kaggle-push {make_args}` first")
    version = values.get("kernel_version")
    return str(values["kernel"]), int(version) if version else None


def submit_kernel(target: Any, kernel_wait: float, wait: float, message: str | None) -> int:  # noqa: ANN401
    """`target`: the experiment's or the blend's bundle (pipeline.kaggle.bundle_format.BundleTarget)."""
    from pipeline.kaggle.bundle_format import read_bundle, version_notes
    from pipeline.kaggle.client import Kaggle  # imports the client: only when Kaggle is really called

    manifest, _ = read_bundle(target)
    kernel, version = pushed_kernel(target.place.pushed, target.make_args)
    kaggle = Kaggle()
    kaggle_wait.check_can_submit(kaggle, target.comp, csv_upload=False)
    status, failure = kaggle_wait.wait_for_kernel(kaggle, kernel, kernel_wait)
    if status != "complete":
        folder = target.place.kernel_output
        tail = log_tail(kaggle.kernel_output(kernel, folder))
        for line in tail:
            log.error("  | %s", line)
        raise UserError(f"kernel {kernel} version {version or '?'} ended {status}"
                        f"{': ' + failure if failure else ''}; its log is in {folder} (last lines above); fix it, "
                        f"then `make kaggle-bundle kaggle-push kaggle-submit {target.make_args}`")  # fmt: skip
    text = message or version_notes(manifest)
    ref = kaggle.submit_code(target.comp, kernel, version, OUTPUT_FILE, text)
    log.info("submitted %s version %s's %s to %s as #%s", kernel, version or "latest", OUTPUT_FILE, target.comp, ref)
    kaggle_wait.finish(kaggle, target.comp, ref, wait)
    return ref


def run(args: argparse.Namespace) -> None:
    from pipeline.kaggle.bundle_format import target_from_args

    target = target_from_args(args)  # --blend NAME: the whole blend's pushed kernel
    if args.kernel_wait < 0:
        raise UserError(f"--kernel-wait {args.kernel_wait:g}: must be 0 or more seconds")
    submit_kernel(target, args.kernel_wait, kaggle_wait.wait_seconds(args), args.message)
