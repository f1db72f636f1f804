"""kernel-predict, inside a Kaggle Kernel: predict the test set with a bundle's fold weights and write
/kaggle/working/submission.csv.

Reads the bundle (pipeline.kaggle.bundle: bundle.json, the resolved config, folds.csv, fold<k>.safetensors,
fold<k>.oof.csv, a custom metric's module) and the competition's files from /kaggle/input/<comp> (paths.raw_dir).
Lays the bundle out as a finished run under the project root ($PIPELINE_ROOT; the kernel script points it at a
temporary folder so only the submission lands in /kaggle/working): configs/<comp>/ (with a custom metric's module,
which load_config makes importable), data/processed/<comp>/folds.csv, and per fold
data/runs/<comp>/<exp>/fold<k>/ with the weights (linked, not copied; a seed bag's members in fold<k>/seed<s>/) and
the OOF predictions. Then:

    test.csv      the test listing of the Kernel's own test set (the hidden one when Kaggle re-runs it)
    fold<k>/test.csv   every fold's test probabilities with the config's TTA (the OOF rows are not re-predicted)
    ensemble, submission   the pipeline's own stages: blend, thresholds or per-class logit offsets fitted on the
                  bundled OOF (the same rows and code as at home, so the same decision), format, validate
    /kaggle/working/submission.csv   a copy of submissions/<comp>/<exp>.csv, written last

A blend bundle (bundle.json of kind "blend": make kaggle-bundle BLEND=<name>) holds every member's own bundle under
the prefix `<exp>--`: `run_blend` stages and predicts each member exactly as above (its own config: image size,
views), ensembles each, then blends their test.csv with the weights and combine method `make blend` chose, through
pipeline.inference.blend_apply (the function `make blend` itself calls), into data/runs/<comp>/blend/<name>/test.csv
and submissions/<comp>/<name>.csv, copied to /kaggle/working/submission.csv last.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.commands.cli import main as run_cli
from pipeline.core import artifacts, cli, paths
from pipeline.core.config import Config, load_config
from pipeline.core.errors import UserError
from pipeline.data.tables import read_test_table
from pipeline.inference.fold_model import predict_test_set
from pipeline.kaggle.bundle_format import MANIFEST_FORMAT, fold_weight_files

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def read_manifest(bundle: Path) -> dict:
    manifest = artifacts.read_json(bundle / "bundle.json")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{bundle / 'bundle.json'}: format {manifest.get('format')!r} is not {MANIFEST_FORMAT}; "
                        "rebuild the bundle with this pipeline version (make kaggle-bundle)")  # fmt: skip
    missing = [name for name in bundle_files(manifest) if not (bundle / name).is_file()]
    if missing:
        raise UserError(f"bundle {bundle} lacks {missing}; rebuild and re-upload it (make kaggle-bundle kaggle-push)")
    return manifest


def bundle_files(manifest: dict) -> list[str]:
    """The files of a bundle the Kernel reads (wheels aside)."""
    folds = [name for fold in manifest["folds"] for name in (*fold_weight_files(fold).values(), fold["oof"])]
    modules = list(manifest.get("metric_modules", {}))
    return [
        manifest["config"]["competition"],
        manifest["config"]["experiment"],
        manifest["folds_csv"],
        *folds,
        *modules,
    ]


def _link(source: Path, target: Path) -> None:
    """`target` shows `source`: a symlink (weights are large and /kaggle/input is read-only), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)


def stage_bundle(bundle: Path, manifest: dict) -> Config:
    """Lay the bundle out as a finished training run under the project root; return its config."""
    comp, exp = manifest["comp"], manifest["exp"]
    configs = paths.configs_dir(comp)
    for name in (manifest["config"]["competition"], manifest["config"]["experiment"]):
        artifacts.write_text(configs / name, (bundle / name).read_text())
    for name, relative in manifest.get("metric_modules", {}).items():  # a custom metric, importable from configs/<comp>
        artifacts.write_text(configs / relative, (bundle / name).read_text())
    cfg = load_config(configs / manifest["config"]["experiment"])
    out = paths.for_config(cfg)
    artifacts.write_text(out.folds_csv, (bundle / manifest["folds_csv"]).read_text())
    for fold in manifest["folds"]:
        k = int(fold["fold"])
        for seed, name in fold_weight_files(fold).items():  # a seed bag's members: fold<k>/seed<s>/
            _link(bundle / name, out.member(seed).weights(k))
        artifacts.write_text(out.oof(k), (bundle / fold["oof"]).read_text())
        out.test_probs(k).unlink(missing_ok=True)  # a re-run in the same session predicts afresh
    # The Kernel's own test listing, as the folds stage writes it (a re-run by Kaggle sees the hidden test set).
    artifacts.write_csv(out.test_csv, read_test_table(cfg.data, paths.raw_dir(comp)))
    log.info("kernel: %s/%s staged under %s (%d folds)", comp, exp, paths.project_root(), len(manifest["folds"]))
    return cfg


def publish_submission(cfg: Config, name: str = "submission.csv") -> Path:
    """Copy the validated submission to /kaggle/working/<name> (where Kaggle looks for it: the manifest's
    output_file, the name the competition's sample submission implies)."""
    source = paths.for_config(cfg).submission
    target = paths.KAGGLE_WORKING / name
    with artifacts.atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def run_bundle(bundle: Path) -> int:
    """The Kernel's work under the CLI's own contract (pipeline.core.cli.run_task): 0, or 2 after one `error:` line.
    Its stages after predicting are the CLI's commands, run as a user would run them."""
    from pipeline.training.model import resolve_device

    debug = cli.debugging([])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    staged: dict[str, Any] = {}

    def prepare() -> None:
        manifest = read_manifest(bundle)
        staged["cfg"] = cfg = stage_bundle(bundle, manifest)
        staged["config"] = str(paths.configs_dir(cfg.comp) / manifest["config"]["experiment"])
        staged["output"] = str(manifest.get("output_file") or "submission.csv")
        predict_test_set(cfg, resolve_device(cfg.device))

    code = cli.run_task(prepare, debug)
    for stage in ("ensemble", "submission"):
        code = code or run_cli([stage, "--config", staged["config"]])
    if code:
        return code
    cfg = staged["cfg"]
    target = publish_submission(cfg, staged["output"])
    scores = artifacts.read_json(paths.for_config(cfg).scores)
    log.info("kernel: wrote %s (%d rows; bundled CV %s = %.4f)", target, sum(1 for _ in target.open()) - 1,
             scores["metric"], scores["cv"])  # fmt: skip
    return 0


def read_blend_manifest(bundle: Path) -> dict:
    """A blend bundle's bundle.json; UserError when it is not one or lacks a member's manifest."""
    manifest = artifacts.read_json(bundle / "bundle.json")
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("kind") != "blend":
        raise UserError(f"{bundle / 'bundle.json'}: not a blend bundle of format {MANIFEST_FORMAT}; rebuild it with "
                        "this pipeline version (make kaggle-bundle BLEND=...)")  # fmt: skip
    missing = [m["manifest"] for m in manifest["members"] if not (bundle / m["manifest"]).is_file()]
    if missing:
        raise UserError(f"bundle {bundle} lacks {missing}; rebuild and re-upload it (make kaggle-bundle kaggle-push)")
    return manifest


def member_view(bundle: Path, member: dict, root: Path) -> Path:
    """A folder showing one member's files under their own names (links to `<prefix><name>`): its own bundle."""
    view = root / member["exp"]
    view.mkdir(parents=True, exist_ok=True)
    for path in bundle.iterdir():
        if path.name.startswith(member["prefix"]):
            _link(path, view / path.name.removeprefix(member["prefix"]))
    return view


def stage_members(bundle: Path, manifest: dict, device_of: Any) -> list[tuple[Config, str]]:  # noqa: ANN401
    """Stage and predict every member as a single-experiment bundle; [(config, its experiment yaml)]."""
    staged = []
    with tempfile.TemporaryDirectory(prefix="blend-members-") as tmp:
        for member in manifest["members"]:
            view = member_view(bundle, member, Path(tmp))
            member_manifest = read_manifest(view)
            cfg = stage_bundle(view, member_manifest)  # links the weights to the bundle's own files, not the view
            staged.append((cfg, str(paths.configs_dir(cfg.comp) / member_manifest["config"]["experiment"])))
            predict_test_set(cfg, device_of(cfg.device))
    return staged


def blend_members(manifest: dict, configs: list[Config]) -> Path:
    """Blend the members' test.csv exactly as `make blend` did (pipeline.inference.blend_apply); the submission path."""
    import numpy as np

    from pipeline.inference import blend_apply
    from pipeline.inference.predictions import read_probs, submission_frame

    cfg, names = configs[0], [m["exp"] for m in manifest["members"]]
    tests = [read_probs(paths.for_config(c).test_blend, c.data.classes) for c in configs]
    weights = np.array([float(manifest["weights"][name]) for name in names])
    frame = blend_apply.blend_tables(tests, names, weights, manifest["combine"], cfg)
    submission = paths.Paths(cfg.comp, manifest["blend"]).submission
    formatted = submission_frame(cfg, frame, submission, manifest.get("decision"))  # make blend's offsets
    artifacts.write_csv(paths.Paths(cfg.comp).blend_test(manifest["blend"]), frame)
    artifacts.write_csv(submission, formatted)
    return submission


def run_blend(bundle: Path) -> int:
    """A blend bundle's Kernel work under the CLI's contract: 0, or 2 after one `error:` line."""
    from pipeline.training.model import resolve_device

    debug = cli.debugging([])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    staged: dict[str, Any] = {"members": []}

    def prepare() -> None:
        staged["manifest"] = read_blend_manifest(bundle)
        staged["members"] = stage_members(bundle, staged["manifest"], resolve_device)

    code = cli.run_task(prepare, debug)
    for _, config in staged["members"]:
        code = code or run_cli(["ensemble", "--config", config])

    def blend() -> None:
        staged["submission"] = blend_members(staged["manifest"], [cfg for cfg, _ in staged["members"]])

    code = code or cli.run_task(blend, debug)
    if code:
        return code
    target = paths.KAGGLE_WORKING / str(staged["manifest"].get("output_file") or "submission.csv")
    with artifacts.atomic_path(target) as tmp:
        shutil.copyfile(staged["submission"], tmp)
    manifest = staged["manifest"]
    log.info("kernel: wrote %s (%d rows; blend %s of %s, %s weights %s; bundled CV %s = %.4f)", target,
             sum(1 for _ in target.open()) - 1, manifest["blend"], ", ".join(m["exp"] for m in manifest["members"]),
             manifest["combine"], manifest["weights"], manifest["metric"], manifest["cv"])  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> None:
    """`python -m pipeline kernel-predict --bundle <folder>` (what the bundle's kernel.py runs once the pipeline is
    installed): a blend bundle or an experiment's; exits with run_bundle's / run_blend's status."""
    if not args.bundle:
        raise UserError("kernel-predict: --bundle <folder holding bundle.json> is required")
    bundle = Path(args.bundle)
    manifest_path = bundle / "bundle.json"
    if not manifest_path.is_file():
        raise UserError(f"kernel-predict: {manifest_path} not found; --bundle names the bundle's folder")
    blend = json.loads(manifest_path.read_text()).get("kind") == "blend"
    code = run_blend(bundle) if blend else run_bundle(bundle)
    if code:
        raise SystemExit(code)
