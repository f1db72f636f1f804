"""The Kaggle Kernel script (kernel.py) that `make kaggle-bundle` writes beside kernel-metadata.json.

It runs inside a Kaggle Kernel with internet off: it finds this experiment's bundle among the Kernel's inputs
(/kaggle/input/<bundle slug>, or deeper where Kaggle mounts it deeper) and, when the fold weights travel as a Kaggle
Model (bundle.json's `weights_model`), the Model's mount (/kaggle/input/<model-slug>/<framework>/<instance>/<version>/),
installs the pipeline from the bundle's wheels with `pip --no-index` (nothing is downloaded; torch, timm, ... are
the image's own), then runs the command
`python -m pipeline kernel-predict` (pipeline.commands.kernel_predict), which predicts the test images with every
fold's weights, blends the folds and writes /kaggle/working/submission.csv (a blend bundle: every member so, then
the blend of the members).

Standalone on purpose: nothing of the pipeline can be imported before it is installed. pipeline.kaggle.bundle
copies this file and fills in SETTINGS; run locally, KAGGLE_INPUT_ROOT / KAGGLE_WORKING_ROOT / PIPELINE_ROOT move
the folders.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS: dict[str, str] = {}  # filled in by pipeline.kaggle.bundle: bundle (dataset slug), comp, exp

MANIFEST = "bundle.json"
INPUT = Path(os.environ.get("KAGGLE_INPUT_ROOT", "/kaggle/input"))


def find_bundle(slug: str) -> Path:
    """The folder holding this experiment's bundle.json: /kaggle/input/<slug>, else up to three levels down."""
    if (INPUT / slug / MANIFEST).is_file():
        return INPUT / slug
    for pattern in (f"*/{MANIFEST}", f"*/*/{MANIFEST}", f"*/*/*/{MANIFEST}"):
        for manifest in sorted(INPUT.glob(pattern)):
            try:
                dataset = json.loads(manifest.read_text()).get("dataset", "")
            except (OSError, ValueError, AttributeError):  # some other dataset's bundle.json
                continue
            if dataset.endswith(f"/{slug}"):
                return manifest.parent
    found = sorted(p.name for p in INPUT.iterdir()) if INPUT.is_dir() else []
    raise SystemExit(
        f"error: no bundle '{slug}' under {INPUT} (inputs: {found}); add the dataset to the Kernel's inputs "
        "(kernel-metadata.json's dataset_sources) or re-run `make kaggle-push`"
    )


def find_model(instance: str, files: list[str]) -> Path:
    """Where Kaggle mounted the bundle's weights when they travel as a Kaggle Model (the kernel's model_sources pin
    `owner/slug/framework/instance/version`): /kaggle/input/<model-slug>/<framework>/<instance-slug>/<version>/
    today, or the same under a models/<owner>/ folder; the newest version that holds every weight file."""
    owner, slug, _, instance_slug = instance.split("/")
    for pattern in (f"{slug}/*/{instance_slug}/*", f"*/{owner}/{slug}/*/{instance_slug}/*",
                    f"*/{slug}/*/{instance_slug}/*"):  # fmt: skip
        found = [p for p in INPUT.glob(pattern) if p.is_dir() and all((p / name).is_file() for name in files)]
        if found:
            return max(found, key=lambda p: int(p.name) if p.name.isdigit() else -1)
    mounted = sorted(str(p.relative_to(INPUT)) for p in INPUT.glob(f"{slug}/*/*/*")) if INPUT.is_dir() else []
    raise SystemExit(
        f"error: the bundle's weights (Kaggle Model {instance}: {len(files)} files) are not under {INPUT} "
        f"(mounted of it: {mounted}); add the Model to the Kernel's inputs (kernel-metadata.json's model_sources) or "
        "re-run `make kaggle-push`"
    )


def with_model_weights(bundle: Path, manifest: dict) -> Path:
    """The bundle as kernel-predict reads it: one folder. Weights that travel as a Kaggle Model are mounted apart
    from the dataset, so both folders' files are linked side by side into a temporary folder."""
    entry = manifest.get("weights_model")
    if not entry:
        return bundle
    model = find_model(entry["instance"], entry["files"])
    view = Path(tempfile.mkdtemp(prefix="bundle-"))
    for folder in (bundle, model):
        for path in sorted(folder.iterdir()):
            if path.is_file() and not (view / path.name).exists():
                (view / path.name).symlink_to(path.resolve())
    print(f"weights: Kaggle Model {entry['instance']} at {model}", flush=True)
    return view


def pip_install(*args: str) -> int:
    """pip with no index and no configuration: only the bundle's wheels and what is already installed count."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--isolated", "--no-index",
               "--disable-pip-version-check", "--no-input", "--no-warn-script-location", *args]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, env={**os.environ, "PIP_CONFIG_FILE": os.devnull}, check=False).returncode


def find_notebook_output(ref: str) -> Path:
    """Where Kaggle mounted the output of notebook `ref` (kernel_sources): the wheels `make kaggle-wheels` built on
    Kaggle for wheels no index has. /kaggle/input/<slug>, or the same under a notebooks/<owner>/ folder."""
    owner, slug = ref.split("/")
    for pattern in (slug, f"*/{owner}/{slug}", f"*/{slug}"):
        found = [p for p in sorted(INPUT.glob(pattern)) if p.is_dir() and any(p.glob("*.whl"))]
        if found:
            return found[0]
    raise SystemExit(
        f"error: the wheels notebook {ref}'s output is not under {INPUT}; add it to the Kernel's inputs "
        "(kernel-metadata.json's kernel_sources) or re-run `make kaggle-wheels` and `make kaggle-bundle`"
    )


def install(bundle: Path, manifest: dict) -> None:
    """The requirements (resolved against the image, missing ones from the bundle and the wheels notebook's output),
    then the pipeline's own wheel."""
    links: tuple[str, ...] = ("--find-links", str(bundle))
    notebook = manifest.get("kaggle_wheels")
    built = sorted(find_notebook_output(notebook["kernel"]).glob("*.whl")) if notebook else []
    if built:
        links += ("--find-links", str(built[0].parent))
    if pip_install(*links, "-r", str(bundle / manifest["requirements"])) != 0:
        # Usually an image package outside the pipeline's tested range: say so, install what is missing, go on.
        print(f"warning: the Kernel's packages do not meet {manifest['requirements']} (see pip's message above); "
              "installing the bundled wheels without dependency checks", file=sys.stderr, flush=True)  # fmt: skip
        wheels = [*(str(bundle / name) for name in manifest["wheels"]), *(str(path) for path in built)]
        if pip_install(*links, "--no-deps", *wheels) != 0:
            raise SystemExit(f"error: pip could not install the wheels bundled in {bundle}")
    wheel = bundle / manifest["package"]["wheel"]
    if pip_install(*links, "--no-deps", "--force-reinstall", str(wheel)) != 0:
        raise SystemExit(f"error: pip could not install {wheel}")
    importlib.invalidate_caches()
    for name in [manifest["package"]["name"], *(w.split("-")[0] for w in manifest["wheels"])]:
        dist = importlib.metadata.distribution(name)
        print(f"  {dist.metadata['Name']} {dist.version} in {dist.locate_file('')}", flush=True)


def main() -> int:
    # Before the pipeline is imported: its paths come from the environment.
    os.environ.setdefault("PIPELINE_ROOT", str(Path(tempfile.gettempdir()) / "pipeline"))  # keeps /kaggle/working tidy
    if not SETTINGS.get("internet"):  # a training notebook (RUNNER=kaggle) may have internet for hub weights
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no internet: never wait on the hub
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    bundle = find_bundle(SETTINGS["bundle"])
    manifest = json.loads((bundle / MANIFEST).read_text())
    if manifest.get("kind") == "train":  # RUNNER=kaggle: train one unit (pipeline.kaggle.remote_unit)
        print(f"unit {SETTINGS['unit']} nonce {SETTINGS['nonce']} session {SETTINGS['session']}", flush=True)
        install(bundle, manifest)
        from pipeline.kaggle.remote_unit import run_unit

        return run_unit(bundle, SETTINGS)
    bundle = with_model_weights(bundle, manifest)  # weights from a Kaggle Model: beside the dataset's files
    blend = manifest.get("kind") == "blend"  # a whole blend: every member's bundle under its prefix
    what = f"blend of {len(manifest['members'])} experiments" if blend else f"{manifest['n_folds']} folds"
    print(f"bundle {manifest['dataset']} ({manifest['comp']}/{manifest['exp']}, {what}) at {bundle}", flush=True)
    install(bundle, manifest)
    import pipeline

    print(f"pipeline {manifest['package']['version']} from {Path(pipeline.__file__).parent}", flush=True)
    # the pipeline's own command (pipeline.commands.kernel_predict), as a user would run it: its exit status is ours
    return subprocess.call([sys.executable, "-m", "pipeline", "kernel-predict", "--bundle", str(bundle)])


if __name__ == "__main__":
    sys.exit(main())
