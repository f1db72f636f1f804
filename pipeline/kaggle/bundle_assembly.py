"""Building blocks of Kaggle bundles, shared by kaggle-bundle (pipeline.kaggle.bundle), RUNNER=kaggle's training
bundle (pipeline.kaggle.remote_bundle) and the wheels notebook (pipeline.kaggle.wheels_kernel): Kaggle names and the
owning account, accelerators, the kernel script with its SETTINGS, the runtime (requirements.txt and wheels), and
`assemble`, which builds a bundle in a hidden folder and renames it into place so a half-built one never looks done.

Inputs: a Config, the installed packages, pipeline/kaggle/kernel.py. Outputs: files in the folders the callers pass.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.config import Config, dump_yaml, load_config, training_fingerprint
from pipeline.core.errors import UserError
from pipeline.kaggle import wheels

log = logging.getLogger(__name__)

LICENSE = "CC0-1.0"  # the client's own default; the dataset is private unless you publish it
SETTINGS_LINE = "SETTINGS: dict[str, str] = {}  # filled in by pipeline.kaggle.bundle: bundle (dataset slug), comp, exp"
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# --accelerator / KAGGLE_ACCELERATOR / kaggle.accelerator -> kernel-metadata.json's machine_shape. A plain account is
# offered T4 x2 and TPU only: NvidiaTeslaT4 is the editor's "GPU T4 x2" (a single T4 is not offered), the default.
# The P100 is retired (Kaggle silently runs a P100 request elsewhere) and the L4 is not offered to every account.
# Keys: config.ACCELERATORS.
ACCELERATORS: dict[str, str | None] = {"t4x2": "NvidiaTeslaT4", "l4": "NvidiaL4", "p100": "NvidiaTeslaP100",
                                       "none": None}  # fmt: skip
DEFAULT_ACCELERATOR = "t4x2"
DOCKER_PINNING = "original"  # kernel-metadata.json's docker_image_pinning_type: "original" or "latest"


@dataclass(frozen=True)
class KaggleNames:
    """Where the bundle lives on Kaggle: `owner/slug` refs and titles that the client accepts."""

    dataset: str
    dataset_title: str
    kernel: str
    kernel_title: str


def slugify(text: str) -> str:
    """What Kaggle's client makes of a title (python-slugify): lower case, runs of other characters -> '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def kaggle_title(comp: str, exp: str, word: str) -> str:
    """`<comp> <exp> <word>` within the 6..50 characters Kaggle allows; a long competition slug is shortened."""
    room = 50 - len(exp) - len(word) - 2
    title = f"{comp[: max(room, 1)].rstrip('-_')} {exp} {word}"[:50].strip()
    return title if len(title) >= 6 else f"{title} bundle"


def kaggle_names(comp: str, exp: str, user: str) -> KaggleNames:
    dataset_title, kernel_title = kaggle_title(comp, exp, "bundle"), kaggle_title(comp, exp, "inference")
    return KaggleNames(f"{user}/{slugify(dataset_title)}", dataset_title, f"{user}/{slugify(kernel_title)}",
                       kernel_title)  # fmt: skip


def kaggle_user(explicit: str | None) -> str:
    """The Kaggle account that will own the dataset and the kernel: --user, else the credentials' username.

    With token auth the username is not in the environment: the client logs in (one call) and says whose token it is.
    """
    user = explicit
    if not user:
        from pipeline.kaggle.client import Kaggle, check_credentials  # reads files and the environment first

        try:
            user = check_credentials().username
            if not user:  # a token: its owner is what Kaggle answers when the client logs in with it
                user = Kaggle().credentials.username
        except UserError as exc:
            log.debug("no Kaggle username from the credentials: %s", exc)
            user = None
    if not user:
        raise UserError("kaggle-bundle: which Kaggle account owns the bundle? pass --user <name> "
                        "(Make: KAGGLE_USER=<name>), or set KAGGLE_API_TOKEN or KAGGLE_USERNAME")  # fmt: skip
    if not USER.fullmatch(user):
        raise UserError(f"--user {user!r}: not a Kaggle username (letters, digits, '-' and '_')")
    return user


def check_reloads(cfg: Config, competition: dict[str, Any], experiment: dict[str, Any]) -> None:
    """The written config must reload to the weights' fingerprint, or predict would refuse them in the Kernel."""
    with tempfile.TemporaryDirectory(prefix="bundle-config-") as tmp:
        folder = Path(tmp) / cfg.comp
        folder.mkdir()
        (folder / "competition.yaml").write_text(dump_yaml(competition))
        (folder / f"{cfg.exp}.yaml").write_text(dump_yaml(experiment))
        reloaded = load_config(folder / f"{cfg.exp}.yaml")
    if training_fingerprint(reloaded) != training_fingerprint(cfg):  # a bug, not a user mistake
        raise RuntimeError("the bundled config does not reload to the trained fingerprint")


def kernel_script(settings: dict[str, str]) -> str:
    template = resources.files("pipeline.kaggle").joinpath("kernel.py").read_text()
    if template.count(SETTINGS_LINE) != 1:
        raise RuntimeError("pipeline/kaggle/kernel.py lost its SETTINGS line")
    return template.replace(SETTINGS_LINE, f"SETTINGS: dict[str, str] = {json.dumps(settings)}")


def place_file(source: Path, target: Path) -> None:
    """Put `source` at `target` by a hard link where the file system allows (instant, no space), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def metric_module_files(cfg: Config) -> dict[str, Path]:
    """A custom metric's source files as {path relative to an import root: file}: the module and its packages'
    __init__.py, so the Kernel can import it from the competition's configs folder."""
    from pipeline.core.metrics import custom_function_spec, import_function

    spec = custom_function_spec(cfg.metric)
    if spec is None:
        return {}
    module_name = spec.partition(":")[0]
    import_function(spec)  # imports the module (one `error:` line when it cannot be)
    module = sys.modules[module_name]
    source = Path(getattr(module, "__file__", None) or "")
    if source.suffix != ".py" or not source.is_file():
        raise UserError(f"metric.function: module {module_name!r} is not a .py file ({source}); the Kaggle bundle "
                        "can only ship a plain Python module: put it in the project folder or configs/")  # fmt: skip
    parts = module_name.split(".")
    relative = "/".join(
        parts[:-1] + ([parts[-1], "__init__.py"] if source.name == "__init__.py" else [parts[-1] + ".py"])
    )
    files = {relative: source}
    root = source.parent.parent if source.name == "__init__.py" else source.parent
    for depth in range(len(parts) - 1, 0, -1):  # the packages above the module
        init = root / "__init__.py"
        if init.is_file():
            files["/".join(parts[:depth] + ["__init__.py"])] = init
        root = root.parent
    return files


def module_file_name(relative: str) -> str:
    """The flat dataset name of a metric module file (Kaggle's client skips sub-folders)."""
    return "metric-module--" + relative.replace("/", "--")


def write_runtime(folder: Path) -> tuple[Path, list[str]]:
    """requirements.txt, this package's wheel and the wheels Kaggle's image lacks, into `folder`:
    (the package wheel, the other wheels' file names)."""
    package, extras, _ = write_runtime_with(folder)
    return package, extras


def write_runtime_with(folder: Path, built_on_kaggle: Sequence[str] = ()) -> tuple[Path, list[str], list[str]]:
    """write_runtime, where a wheel that cannot be fetched may instead come from the wheels notebook
    (`make kaggle-wheels`, pipeline.kaggle.wheels_kernel) when `built_on_kaggle` lists it (`name==version`):
    (the package wheel, the other wheels' file names, the requirements left to that notebook)."""
    requirements = wheels.runtime_requirements()
    (folder / "requirements.txt").write_text(
        "# What the inference kernel needs: the Kernel's image has most of it, the rest is bundled here (*.whl)\n"
        + "".join(f"{line}\n" for line in requirements)
    )
    package = wheels.build_package_wheel(folder)
    extras, from_kaggle = [], []
    for dist in wheels.bundled_distributions(requirements):
        try:
            extras.append(wheels.bundle_wheel(dist, folder).name)
        except UserError as exc:
            pinned = wheels.pinned(dist)
            if pinned not in built_on_kaggle:
                raise UserError(f"{exc}; `make kaggle-wheels CONFIG=... PACKAGES={pinned}` does that for you, then "
                                "re-run kaggle-bundle") from exc  # fmt: skip
            log.info("kaggle-bundle: %s comes from the wheels notebook (make kaggle-wheels), not the bundle", pinned)
            from_kaggle.append(pinned)
    return package, extras, from_kaggle


WHEELS_RECORD = (
    "kaggle-wheels.json"  # make kaggle-wheels' record (pipeline.kaggle.wheels_kernel), read by kaggle-bundle
)


def wheels_notebook(comp: str) -> dict[str, Any] | None:
    """The competition's wheels notebook (`make kaggle-wheels`: its kernel ref and the `requirements` it builds) when
    it was built for the Kernel's Python today, else None."""
    from pipeline.core import paths

    path = paths.kaggle_wheels_dir(comp) / WHEELS_RECORD
    if not path.is_file():
        return None
    record = artifacts.read_json(path)
    return record if record.get("python") == wheels.kaggle_target()[0] else None


def choose_accelerator(cfg: Config, explicit: str | None, configured: str = "") -> str:
    """--accelerator, else $KAGGLE_ACCELERATOR, else the config's kaggle.accelerator (`configured`, validated by
    load_config), else t4x2 (none when the config's device is cpu)."""
    choice = (explicit or os.environ.get("KAGGLE_ACCELERATOR") or configured or "").strip().lower()
    if not choice:
        return "none" if cfg.device == "cpu" else DEFAULT_ACCELERATOR
    if choice not in ACCELERATORS:
        raise UserError(f"accelerator {choice!r} (--accelerator / KAGGLE_ACCELERATOR): use one of "
                        f"{', '.join(ACCELERATORS)}")  # fmt: skip
    if choice in ACCELERATOR_WARNINGS:
        log.warning("warning: %s", ACCELERATOR_WARNINGS[choice])
    return choice


ACCELERATOR_WARNINGS = {
    "p100": "accelerator p100: Kaggle retired the P100 and silently replaces it, so the kernel runs elsewhere (on "
            "what Kaggle picks, not on the GPU asked for); use t4x2, what a plain account is offered",
    "l4": "accelerator l4: Kaggle does not offer the L4 to every account (a plain one sees T4 x2 and TPU only), so "
          "the push may be refused or run elsewhere; t4x2 is offered to all",
}  # fmt: skip


def assemble(folder: Path, dataset: Callable[[Path], dict], kernel: Callable[[Path, dict], None]) -> dict:
    """Build a bundle's dataset/ (`dataset` returns the manifest, written last as bundle.json) and kernel/ (`kernel`
    gets the folder and that manifest) in a hidden folder beside `folder`, then rename it into place, so a half-built
    bundle never looks done."""
    staging = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted build
    try:
        (staging / "dataset").mkdir(parents=True)
        (staging / "kernel").mkdir()
        manifest = dataset(staging / "dataset")
        kernel(staging / "kernel", manifest)
        (staging / "dataset" / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")  # the manifest: last
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise artifacts.write_error(staging / "dataset" / "bundle.json", exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    artifacts.publish(staging, folder)
    return manifest
