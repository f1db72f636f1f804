"""kaggle-submit: a code competition's submission, after kaggle-push: the pushed kernel's run, its output, the score.

Reads data/runs/<comp>/<exp>/kaggle-push.json (the kernel ref, the version number kaggle-push's SaveKernel returned,
and when it was pushed) and the bundle's manifests. Waits for that version's run, not merely the kernel's latest
status (pipeline.kaggle.wait.wait_for_kernel_version, up to --kernel-wait seconds), streaming its log as it runs
(`  | ` lines; --no-follow: status lines only); when it failed, downloads its log (`kernels_output`) into
data/runs/<comp>/<exp>/kaggle-kernel-output/ and shows its last lines; when it completed, submits exactly that
version's output file (`competition_submit_code` with kernel_version; the name the competition expects, from the
manifest's `output_file`), then waits for the score like submit does (--wait, Make's WAIT; 0 skips).
With --blend NAME (Make: BLEND=<name>) the same files of the blend's bundle, under data/runs/<comp>/blend/<name>/.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.errors import UserError
from pipeline.kaggle import wait as kaggle_wait
from pipeline.kaggle.wait import log_tail

log = logging.getLogger(__name__)

OUTPUT_FILE = "submission.csv"  # what pipeline.commands.kernel_predict writes into /kaggle/working


def pushed_at(record: Path) -> datetime | None:
    """When kaggle-push pushed the kernel (UTC), or None for a record written before it said."""
    value = (artifacts.read_json(record) if record.is_file() else {}).get("kernel_pushed_at")
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def pushed_kernel(record: Path, make_args: str = "CONFIG=...") -> tuple[str, int | None]:
    """(kernel ref, version) that kaggle-push recorded; UserError when nothing was pushed yet."""
    values = artifacts.read_json(record) if record.is_file() else {}
    if not values.get("kernel"):
        raise UserError(f"{record} names no pushed kernel; run `make kaggle-push {make_args}` first")
    version = values.get("kernel_version")
    return str(values["kernel"]), int(version) if version else None


def submit_kernel(target: Any, kernel_wait: float, wait: float, message: str | None,  # noqa: ANN401
                  follow: bool = True) -> int:  # fmt: skip
    """`target`: the experiment's or the blend's bundle (pipeline.kaggle.bundle_format.BundleTarget)."""
    from pipeline.kaggle.bundle_format import read_bundle, version_notes
    from pipeline.kaggle.client import Kaggle  # imports the client: only when Kaggle is really called

    manifest, _ = read_bundle(target)
    kernel, version = pushed_kernel(target.place.pushed, target.make_args)
    output_file = str(manifest.get("output_file") or OUTPUT_FILE)
    kaggle = Kaggle()
    kaggle_wait.check_can_submit(kaggle, target.comp, csv_upload=False)
    status, failure = kaggle_wait.wait_for_kernel_version(kaggle, kernel, version, kernel_wait,
                                                          pushed_at(target.place.pushed), follow)  # fmt: skip
    if version is None:  # a push recorded before versions were: submit the version that just ran, by number
        from pipeline.kaggle.calls import kernel_version

        version = kernel_version(kaggle, kernel).current
    if status != "complete":
        folder = target.place.kernel_output
        tail = log_tail(kaggle.kernel_output(kernel, folder))
        for line in tail:
            log.error("  | %s", line)
        raise UserError(f"kernel {kernel} version {version or '?'} ended {status}"
                        f"{': ' + failure if failure else ''}; its log is in {folder} (last lines above); fix it, "
                        f"then `make kaggle-bundle kaggle-push kaggle-submit {target.make_args}`")  # fmt: skip
    text = message or version_notes(manifest)
    ref = kaggle.submit_code(target.comp, kernel, version, output_file, text)
    log.info("submitted %s version %s's %s to %s as #%s", kernel, version or "latest", output_file, target.comp, ref)
    kaggle_wait.finish(kaggle, target.comp, ref, wait)
    return ref


def run(args: argparse.Namespace) -> None:
    from pipeline.kaggle.bundle_format import target_from_args

    target = target_from_args(args)  # --blend NAME: the whole blend's pushed kernel
    if args.kernel_wait < 0:
        raise UserError(f"--kernel-wait {args.kernel_wait:g}: must be 0 or more seconds")
    submit_kernel(target, args.kernel_wait, kaggle_wait.wait_seconds(args), args.message,
                  follow=not getattr(args, "no_follow", False))  # fmt: skip
