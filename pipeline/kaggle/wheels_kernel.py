"""kaggle-wheels: build on Kaggle itself the compiled wheels no index has for the Kernel's Python and platform.

The inference kernel runs with internet off, so every package Kaggle's image lacks travels in the bundle as a
wheel; a compiled one must match the Kernel's interpreter (pipeline.kaggle.wheels.kaggle_target) and is fetched with
`pip download --platform ...`. When no index has it, this stage writes and pushes a small script kernel with internet
on, `<user>/<comp>-py<NN>-wheels`, that runs `pip wheel --no-deps` for those requirements into /kaggle/working (its
output), waits for its run and checks that its output holds a wheel of each. kaggle-bundle then leaves those wheels
out of the dataset and attaches the notebook to the inference kernel through `kernel_sources`; the Kernel's
kernel.py installs from the notebook's mounted output beside the bundle's own wheels.

Reads the requirements (--packages "name==version ...", else every compiled dependency the bundle ships whose wheel
cannot be fetched now). Writes data/runs/<comp>/kaggle-wheels/: kernel/ (kernel.py, kernel-metadata.json), output/
(the built wheels, downloaded to check them) and kaggle-wheels.json (the kernel, its version, the requirements, the
Python they were built for), written last: kaggle-bundle reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError
from pipeline.kaggle import wheels
from pipeline.kaggle.bundle_assembly import DOCKER_PINNING, WHEELS_RECORD, kaggle_title, slugify

log = logging.getLogger(__name__)

DEFAULT_WAIT = 3600.0  # seconds to wait for the notebook's run (building a wheel from source can take a while)
SCRIPT = '''"""Builds wheels for this Kaggle image's Python (written by `make kaggle-wheels`; internet on).

Its output (/kaggle/working) is attached to the offline inference kernel through kernel_sources."""

import os
import subprocess
import sys

REQUIREMENTS = {requirements}
OUTPUT = os.environ.get("KAGGLE_WORKING_ROOT", "/kaggle/working")  # the notebook's output, which Kaggle keeps

command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--wheel-dir", OUTPUT,
           *REQUIREMENTS]
print("$", " ".join(command[2:]), flush=True)
sys.exit(subprocess.call(command))
'''


def kernel_names(comp: str, user: str) -> tuple[str, str]:
    """(ref, title) of the competition's wheels notebook for the Kernel's Python: `<user>/<comp>-py312-wheels`."""
    python = wheels.kaggle_target()[0]
    title = kaggle_title(comp, f"py{python.replace('.', '')}", "wheels")
    return f"{user}/{slugify(title)}", title


def unfetchable() -> list[str]:
    """`name==version` of every compiled dependency the bundle ships whose wheel for the Kernel cannot be fetched."""
    missing = []
    with tempfile.TemporaryDirectory(prefix="kaggle-wheels-") as tmp:
        for name in wheels.bundled_distributions(wheels.runtime_requirements()):
            dist = wheels._distribution(name)
            if wheels.is_pure(dist.read_text("WHEEL") or ""):
                continue
            try:
                wheels.fetch_for_kaggle(wheels.canonical(dist.metadata["Name"]), dist.version, Path(tmp))
            except UserError as exc:
                log.info("kaggle-wheels: %s %s: %s", name, dist.version, exc)
                missing.append(wheels.pinned(name))
    return missing


def write_kernel(folder: Path, ref: str, title: str, requirements: list[str]) -> None:
    """kernel.py (pip wheel of `requirements`) and kernel-metadata.json: a private script, internet on, CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(folder / "kernel.py", SCRIPT.format(requirements=json.dumps(requirements)))
    metadata = {
        "id": ref, "title": title, "code_file": "kernel.py", "language": "python", "kernel_type": "script",
        "is_private": True, "enable_gpu": False, "enable_tpu": False,
        "enable_internet": True,  # pip reaches the index here, not in the inference kernel
        "dataset_sources": [], "competition_sources": [], "kernel_sources": [], "model_sources": [],
        "docker_image_pinning_type": DOCKER_PINNING,
    }  # fmt: skip
    artifacts.write_text(folder / "kernel-metadata.json", json.dumps(metadata, indent=2) + "\n")


def wheel_of(requirement: str, names: list[str]) -> str | None:
    """The file among `names` that is a wheel of `requirement` (`name==version`), or None."""
    name, _, version = requirement.partition("==")
    stem = wheels.canonical(name).replace("-", "_")
    return next((n for n in names if n.endswith(".whl") and wheels.canonical(n.split("-")[0]).replace("-", "_") == stem
                 and (not version or n.split("-")[1] == version)), None)  # fmt: skip


def build_on_kaggle(kaggle: Any, comp: str, user: str, requirements: list[str], wait: float) -> dict[str, Any]:  # noqa: ANN401
    """Push the notebook, wait for its run, check its output; the record kaggle-bundle reads (written last)."""
    from pipeline.kaggle.wait import log_tail, wait_for_kernel_version

    folder = paths.kaggle_wheels_dir(comp)
    ref, title = kernel_names(comp, user)
    write_kernel(folder / "kernel", ref, title, requirements)
    pushed_at = datetime.now(UTC)
    answer = kaggle.push_kernel(ref, folder / "kernel")
    version = getattr(answer, "version_number", None)
    log.info("kaggle-wheels: notebook %s version %s pushed (internet on): pip wheel %s", ref, version or "?",
             " ".join(requirements))  # fmt: skip
    status, failure = wait_for_kernel_version(kaggle, ref, version, wait, pushed_at)
    output = kaggle.kernel_output(ref, folder / "output")
    names = [p.name for p in output]
    missing = [r for r in requirements if wheel_of(r, names) is None]
    if status != "complete" or missing:
        tail = "; ".join(log_tail(output)[-3:]) or failure or "no log"
        raise UserError(f"the wheels notebook {ref} version {version} {status} without a wheel of "
                        f"{', '.join(missing or requirements)} (its log ends: {tail}); see "
                        f"https://www.kaggle.com/code/{ref}, pin a version that builds, and re-run "
                        "`make kaggle-wheels`")  # fmt: skip
    record = {"kernel": ref, "version": version, "requirements": requirements, "python": wheels.kaggle_target()[0],
              "wheels": sorted(n for n in names if n.endswith(".whl"))}  # fmt: skip
    artifacts.write_json(folder / WHEELS_RECORD, record)
    log.info("kaggle-wheels: %s built %s; `make kaggle-bundle` now attaches it to the inference kernel "
             "(kernel_sources)", ref, ", ".join(record["wheels"]))  # fmt: skip
    return record


def run(args: argparse.Namespace) -> None:
    from pipeline.core.cli import comp_from_args
    from pipeline.kaggle.client import Kaggle

    comp = comp_from_args(args)
    requirements = (args.packages or "").replace(",", " ").split() or unfetchable()
    if not requirements:
        log.info("kaggle-wheels: every compiled wheel the bundle needs can be fetched for Kaggle's Python %s; "
                 "nothing to build", wheels.kaggle_target()[0])  # fmt: skip
        return
    bad = [r for r in requirements if "==" not in r]
    if bad:
        raise UserError(f"--packages {' '.join(bad)}: pin each as name==version (what the bundle was trained with)")
    kaggle = Kaggle()
    user = args.user or kaggle.credentials.username
    build_on_kaggle(kaggle, comp, user, requirements, DEFAULT_WAIT if args.wait is None else args.wait)
