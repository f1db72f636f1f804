"""Wheels for a Kaggle Kernel with internet off: this package's own, and the dependencies Kaggle's image lacks.

The package's wheel is built from its source checkout (`pip wheel --no-deps --no-build-isolation --no-index`) in a
temporary copy, so the checkout gains no build/ or egg-info folder; without a checkout (an installed wheel) it is
re-packed from the installed files. A dependency's wheel is always re-packed from its installed files (the RECORD
pip wrote), so the bundle holds exactly the versions this run used and building it needs neither index nor network.

Which dependencies: the package's requirements minus the Kaggle client (`kaggle`: download and submit only; a
Kernel reads /kaggle/input) are what a Kernel needs (runtime_requirements). Those Kaggle's Python image has
(KAGGLE_IMAGE), and everything those depend on, are never bundled; the rest are, with their own dependencies.

Only pure-Python wheels (`py3-none-any`) are re-packed from this machine's install: a compiled one was built for
this machine, not for the Kernel's. The Kernel's interpreter and platform are one setting, `kaggle_target()`:
KAGGLE_TARGET (what Kaggle's image, Kaggle/docker-python, runs today: CPython 3.12 on manylinux x86_64), overridden
by PIPELINE_KAGGLE_PYTHON and PIPELINE_KAGGLE_PLATFORM (comma-separated) when Kaggle moves on. A compiled dependency
is fetched for that target with `pip download --platform ... --only-binary=:all:` (pip's own configuration, index or
find-links, applies), or refused with the two ways out: fetch it where there is internet, or build it on Kaggle
itself with a utility notebook that has internet on (`wheels_kernel_script`), mounted through `kernel_sources`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from packaging.requirements import Requirement

log = logging.getLogger(__name__)

DISTRIBUTION = "kaggle-pipeline"
# In Kaggle's Python image (https://github.com/Kaggle/docker-python): its own versions are used, never replaced.
KAGGLE_IMAGE = frozenset({
    "torch", "torchvision", "timm", "albumentations", "pandas", "numpy", "scikit-learn", "scipy", "pyyaml", "tqdm",
    "matplotlib", "pillow", "opencv-python", "opencv-python-headless", "safetensors",
})  # fmt: skip
KERNEL_UNUSED = frozenset({"kaggle"})  # the Kaggle client: download/submit/scores only
# Files of an installed distribution that pip writes at install time and that are no part of its wheel.
_INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "RECORD.jws", "RECORD.p7s"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed times: the same files give the same wheel, byte for byte
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01: what setuptools stamps into the package's own wheel
# The Kernel's interpreter and platform: Kaggle's Python image (Kaggle/docker-python) runs CPython 3.12 today.
KAGGLE_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
KAGGLE_PYTHON = "3.12"
KAGGLE_TARGET = {"python": KAGGLE_PYTHON, "platforms": KAGGLE_PLATFORMS}


def kaggle_target() -> tuple[str, tuple[str, ...]]:
    """(Python version, wheel platform tags) of the Kernel: KAGGLE_TARGET, or PIPELINE_KAGGLE_PYTHON /
    PIPELINE_KAGGLE_PLATFORM (comma-separated tags) where set. UserError for a version that is not `3.N`."""
    python = (os.environ.get("PIPELINE_KAGGLE_PYTHON") or str(KAGGLE_TARGET["python"])).strip()
    if not re.fullmatch(r"3\.\d+", python):
        raise UserError(f"PIPELINE_KAGGLE_PYTHON={python!r}: expected a Python version such as 3.12")
    platforms = tuple(p.strip() for p in (os.environ.get("PIPELINE_KAGGLE_PLATFORM") or "").split(",") if p.strip())
    return python, platforms or tuple(KAGGLE_TARGET["platforms"])


def canonical(name: str) -> str:
    """PEP 503 name: `Iterative_Stratification` -> `iterative-stratification`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(name: str) -> str:
    """`name==version` of installed distribution `name`, its name canonical: how kaggle-wheels lists what it built."""
    return f"{canonical(name)}=={_distribution(name).version}"


def _distribution(name: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UserError(f"{name} is not installed, so it cannot be bundled; run `make install`") from exc


def requirements_of(name: str) -> list[Requirement]:
    """The requirements of installed distribution `name` that apply here without extras."""
    from packaging.requirements import InvalidRequirement, Requirement  # pip's own dependency; only needed here

    found = []
    for text in _distribution(name).requires or []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            log.debug("%s: skipping unparsable requirement %r", name, text)
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def runtime_requirements() -> list[str]:
    """This package's requirements that a Kernel needs, as requirement strings in declared order."""
    return [str(r) for r in requirements_of(DISTRIBUTION) if canonical(r.name) not in KERNEL_UNUSED]


def closure(names: Iterable[str], stop: Iterable[str] = ()) -> set[str]:
    """`names` and everything they depend on (canonical names), not following into `stop`; unknown names skipped."""
    stop, seen, todo = set(stop), set(), [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        try:
            todo.extend(canonical(r.name) for r in requirements_of(name))
        except UserError:  # not installed here (e.g. opencv-python beside opencv-python-headless): nothing to follow
            continue
        seen.add(name)
    return seen


def bundled_distributions(requirements: list[str]) -> list[str]:
    """The distributions a Kernel lacks: what `requirements` need, minus Kaggle's image and all it depends on."""
    from packaging.requirements import Requirement

    image = closure(KAGGLE_IMAGE)
    wanted = [canonical(Requirement(r).name) for r in requirements]
    missing = [name for name in wanted if name not in image]
    for name in missing:
        _distribution(name)  # not installed here: say so, instead of a bundle that cannot install
    return sorted(closure(missing, stop=image))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel_tag(wheel_metadata: str) -> str:
    """`Tag: py2-none-any` + `Tag: py3-none-any` -> `py2.py3-none-any` (the wheel file name's compressed tag set)."""
    tags = [line.split(":", 1)[1].strip() for line in wheel_metadata.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise ValueError("no Tag lines")
    parts = [sorted({tag.split("-")[i] for tag in tags}) for i in range(3)]
    return "-".join(".".join(p) for p in parts)


def repack_installed(name: str, dest: Path) -> Path:
    """A wheel of installed distribution `name`, from the files its RECORD lists; returns its path in `dest`."""
    dist = _distribution(name)
    wheel_metadata = dist.read_text("WHEEL")
    files = dist.files or []
    if not wheel_metadata or not files:
        raise UserError(f"{name} {dist.version} was not installed from a wheel, so it cannot be re-packed; "
                        f"put a wheel of it in {dest} by hand (pip download {name}=={dist.version})")  # fmt: skip
    try:
        tag = _wheel_tag(wheel_metadata)
    except ValueError as exc:
        raise UserError(f"{name} {dist.version}: its WHEEL file has no tags; reinstall it with pip") from exc
    info_dir = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info_dir is None:
        raise UserError(f"{name} {dist.version}: its RECORD lists no .dist-info folder; reinstall it with pip")
    path = dest / f"{canonical(dist.metadata['Name']).replace('-', '_')}-{dist.version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in sorted(files, key=lambda f: f.as_posix()):
            parts = file.parts
            # Scripts and data outside site-packages are left out: pip regenerates console scripts from entry points.
            if parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
                continue
            if parts[0] == info_dir and parts[-1] in _INSTALL_ONLY:
                continue
            data = Path(file.locate()).read_bytes()
            wheel.writestr(zipfile.ZipInfo(file.as_posix(), _ZIP_TIME), data)
            record.append(_record_line(file.as_posix(), data))
        record.append(f"{info_dir}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", _ZIP_TIME), "\n".join(record) + "\n")
    return path


def is_pure(wheel_metadata: str) -> bool:
    """Every tag of the wheel is pure Python for Python 3 (`py3-none-any`, `py2.py3-none-any`)."""
    tags = [line.split(":", 1)[1].strip() for line in wheel_metadata.splitlines() if line.startswith("Tag:")]
    return (
        bool(tags)
        and all(t.split("-")[1:] == ["none", "any"] and t.startswith("py") for t in tags)
        and any(t.startswith("py3") for t in tags)
    )


def bundle_wheel(name: str, dest: Path) -> Path:
    """A wheel of installed `name` that installs in the Kernel: re-packed when pure Python, else fetched for it."""
    dist = _distribution(name)
    if is_pure(dist.read_text("WHEEL") or ""):
        return repack_installed(name, dest)
    return fetch_for_kaggle(canonical(dist.metadata["Name"]), dist.version, dest)


def fetch_for_kaggle(name: str, version: str, dest: Path) -> Path:
    """`pip download` the wheel of `name==version` built for the Kernel's platform into `dest`; UserError if none."""
    python, tags = kaggle_target()
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform in tags for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--retries", "0", "--timeout", "30", *platforms, "--python-version", python,
               "--implementation", "cp", "--abi", abi, "--dest", str(dest), f"{name}=={version}"]  # fmt: skip
    before = set(dest.glob("*.whl"))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    fetched = sorted(set(dest.glob("*.whl")) - before)
    if result.returncode != 0 or len(fetched) != 1:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise UserError(
            f"{name} {version} is compiled, so this machine's copy may not run in a Kaggle Kernel, and no wheel for "
            f"Kaggle's platform (Linux x86_64, CPython {python}) could be fetched ({lines[-1].strip()}); run "
            f"`pip download --no-deps --only-binary=:all: --platform {tags[0]} --python-version {python} "
            f"--dest {dest} {name}=={version}` where there is internet, then rebuild the bundle; or build it on "
            f"Kaggle itself: a utility notebook with internet on running `pip wheel --wheel-dir /kaggle/working "
            f"{name}=={version}`, added to the inference kernel's kernel_sources"
        )
    log.info("fetched %s for Kaggle's platform", fetched[0].name)
    return fetched[0]


def source_checkout() -> Path | None:
    """The folder holding this package's pyproject.toml when it runs from a source checkout, else None."""
    root = Path(__file__).resolve().parents[2]  # pipeline/kaggle/wheels.py -> the checkout
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(rf'^name\s*=\s*"{DISTRIBUTION}"', pyproject.read_text(), re.MULTILINE):
        return root
    return None


def build_package_wheel(dest: Path) -> Path:
    """This package's wheel in `dest`: built from the source checkout, else re-packed from the installed files."""
    root = source_checkout()
    if root is None:
        return repack_installed(DISTRIBUTION, dest)
    with tempfile.TemporaryDirectory(prefix="pipeline-wheel-") as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(root / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
            if (root / name).is_file():
                shutil.copy2(root / name, source / name)
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps", "--no-build-isolation",
                   "--no-index", "--quiet", "--wheel-dir", str(out), str(source)]  # fmt: skip
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        built = sorted(out.glob("*.whl"))
        if result.returncode != 0 or len(built) != 1:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise UserError(f"could not build the {DISTRIBUTION} wheel from {root}: {lines[-1]}; check that "
                            f"setuptools is installed (`make install`) and {root / 'pyproject.toml'}")  # fmt: skip
        return Path(shutil.copy2(built[0], dest / built[0].name))
