"""doctor: is this machine ready? Package versions, GPUs, Kaggle credentials, Kaggle Kernel or not, free disk.

Reads the environment only and writes nothing. Prints one `name: value` line per check and, under a check
that failed, `  fix: ...` with the usual remedy. Exits 0 either way: a diagnosis, not a gate.
Never imports kaggle (importing it authenticates, and without credentials prints a page of help) and never
prints a Kaggle key or token: every line is scrubbed of the secrets found in the environment and files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import UserError

PACKAGES = ("torch", "torchvision", "timm", "albumentations", "kaggle", "kaggle-pipeline")
LOW_DISK_GB = 20.0  # a competition's images plus a few runs' weights and caches
CUDA_WHEELS = "https://download.pytorch.org/whl/cu126"


@dataclass
class Check:
    name: str
    value: str
    fixes: list[str] = field(default_factory=list)


def package_checks() -> list[Check]:
    checks = [Check("python", f"{platform.python_version()} ({sys.executable})")]
    for name in PACKAGES:
        try:
            checks.append(Check(name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(name, "not installed", ["run `make install` (it installs the pinned versions)"]))
    return checks


def _nvidia_smi() -> tuple[str | None, str | None]:
    """(path of nvidia-smi, 'name, driver' lines) without failing when it hangs or errors."""
    path = shutil.which("nvidia-smi")
    if not path:
        return None, None
    try:
        result = subprocess.run([path, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=15, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return path, None
    return path, result.stdout.strip() if result.returncode == 0 else None


def gpu_checks() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # a broken install must still get a diagnosis
        return [Check("cuda", f"unknown: torch does not import ({type(exc).__name__}: {exc})", ["run `make install`"])]
    build = torch.version.cuda
    checks = [Check("torch build", f"CUDA {build}" if build else "CPU-only (torch.version.cuda is None)")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi, smi_gpus = _nvidia_smi()
    count = torch.cuda.device_count() if build and torch.cuda.is_available() else 0
    if count:
        names = []
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            names.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
        checks.append(Check("cuda", f"available, {count} device(s): {'; '.join(names)}"))
        shown = f"CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "CUDA_VISIBLE_DEVICES unset: every GPU"
        checks.append(Check("gpus used", f"{count} ({shown}); torchrun --nproc_per_node=N (make GPUS=N) uses "
                                         f"cuda:0..cuda:N-1 of these, N <= {count}"))  # fmt: skip
    else:
        fixes = []
        if not build:
            fixes.append(f"this torch is a CPU-only build: install a CUDA build (pip install torch torchvision "
                         f"--index-url {CUDA_WHEELS}, choosing the CUDA your driver supports at pytorch.org); "
                         "in a Kaggle Kernel keep the preinstalled torch")  # fmt: skip
        if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
            fixes.append(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU: unset it or list device ids (0,1)")
        if not smi:
            fixes.append("no NVIDIA driver found (nvidia-smi not on PATH): install the driver; in a Kaggle Kernel "
                         "choose Settings > Accelerator > GPU")  # fmt: skip
        elif build:
            fixes.append(f"nvidia-smi works but torch (CUDA {build}) sees no GPU: the driver may be older than CUDA "
                         f"{build} (compare `nvidia-smi`'s CUDA Version), or reboot after a driver update")  # fmt: skip
        checks.append(Check("cuda", "not available: training runs on the CPU (slow)", fixes))
    if smi:
        checks.append(Check("nvidia-smi", f"{smi}" + (f" ({smi_gpus.replace(chr(10), '; ')})" if smi_gpus else "")))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        checks.append(Check("mps", "available (Apple GPU): device=auto uses it"))
    return checks


def credential_check() -> tuple[Check, list[str]]:
    """Where the Kaggle credentials would come from (pipeline.kaggle.client's rules, no import of kaggle), and
    the secret values every printed line must be scrubbed of."""
    from pipeline.kaggle.client import check_credentials

    hidden = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    try:
        found = check_credentials()
    except UserError as exc:
        check = Check("credentials", "missing (needed by download, submit and scores only)", [str(exc)])
        return check, [v for v in hidden if len(v) >= 4]
    user = f", user {found.username}" if found.username else ""
    hidden += list(found.secrets)
    return Check("credentials", f"found ({found.source}{user})"), [v for v in hidden if len(v) >= 4]


def kernel_check() -> Check:
    if paths.in_kaggle_kernel():
        run_type = os.environ.get("KAGGLE_KERNEL_RUN_TYPE", "?")
        return Check(
            "kaggle kernel", f"yes (run type {run_type}); inputs {paths.KAGGLE_INPUT}, outputs {paths.KAGGLE_WORKING}"
        )
    return Check("kaggle kernel", "no")


def disk_check() -> Check:
    root = paths.project_root()
    existing = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    free_gb, total_gb = usage.free / 2**30, usage.total / 2**30
    value = f"{free_gb:.1f} GiB free of {total_gb:.0f} GiB at {root}"
    fixes = []
    if free_gb < LOW_DISK_GB:
        fixes.append(f"less than {LOW_DISK_GB:.0f} GiB free: delete old data/runs/*/*/fold*/work checkpoints, "
                     "or set PIPELINE_ROOT to a bigger disk")  # fmt: skip
    return Check("disk", value, fixes)


def weights_check() -> Check:
    folder = paths.weights_dir()
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pth")) if folder.is_dir() else []
    offline = " (HF_HUB_OFFLINE=1: hub downloads off)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return Check("weights cache", f"{folder}: {len(files)} file(s){offline}")


def scrub(text: str, hidden: list[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "***")
    return text


def diagnose() -> tuple[list[Check], list[str]]:
    """Every check, and the secrets to scrub from what is printed."""
    credentials, hidden = credential_check()
    return [*package_checks(), *gpu_checks(), credentials, kernel_check(), disk_check(), weights_check()], hidden


def format_checks(checks: list[Check], hidden: list[str]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{check.name}: {check.value}")
        lines += [f"  fix: {fix}" for fix in check.fixes]
    problems = sum(bool(c.fixes) for c in checks)
    lines.append(f"doctor: {problems} thing(s) to look at (the fix: lines)" if problems else "doctor: all good")
    return scrub("\n".join(lines), hidden)


def run(args: argparse.Namespace) -> None:
    checks, hidden = diagnose()
    print(format_checks(checks, hidden))
