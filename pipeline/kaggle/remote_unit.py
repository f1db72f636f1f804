"""Inside a RUNNER=kaggle notebook: train one unit (a fold, or a seed-bag member) and leave it in /kaggle/working.

Reads the training bundle (pipeline.kaggle.remote_bundle: bundle.json of kind "train") from the notebook's inputs,
the competition where Kaggle mounts it (paths.raw_dir), and, when this session resumes, the previous session's
output (unit.json + unit.tar, mounted from the kernel's own latest output under the inputs). Lays the bundle out
under the project root ($PIPELINE_ROOT, a temporary folder), restores the previous session's checkpoint, then runs
the CLI's own `train --fold K [--seed S]` with train.time_budget set to what is left of the session's budget.
Writes into /kaggle/working:

    unit.tar    the unit's folder as training left it (relative to fold<k>/[seed<s>/]): model.safetensors,
                oof_plain.csv, log.csv when done; log.csv and work/last.pt when the budget stopped it
    unit.json   written last: unit, nonce (which push this session answers), session, state (done | stopped |
                failed), exit code, fingerprint, epochs done, and the SHA-256 of every file in unit.tar

Exits 0 when done or stopped (the session completes; home resumes a stopped unit in a new session), else the
train command's exit code after its `error:` line, so Kaggle marks the session as failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths

log = logging.getLogger(__name__)

UNIT_JSON = "unit.json"
UNIT_TAR = "unit.tar"
STARTED = time.monotonic()  # imported right after the install: close to the session's start


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stage(bundle: Path, manifest: dict[str, Any]) -> Path:
    """The bundle as a project: configs/<comp>/, folds.csv and the extra files; the experiment yaml's path."""
    from pipeline.core.config import load_config

    configs = paths.configs_dir(manifest["comp"])
    for name in manifest["config"].values():
        artifacts.write_text(configs / name, (bundle / name).read_text())
    root = paths.project_root()
    for name, relative in manifest.get("files", {}).items():
        artifacts.write_bytes(root / relative, (bundle / name).read_bytes())
    config = configs / manifest["config"]["experiment"]
    cfg = load_config(config)
    artifacts.write_bytes(paths.for_config(cfg).folds_csv, (bundle / manifest["folds_csv"]).read_bytes())
    return config


def previous_output(unit: str, fingerprint: str) -> tuple[dict[str, Any], Path] | None:
    """The latest stopped session's (unit.json, unit.tar) of this unit among the inputs, or None."""
    found = []
    for record in sorted(paths.KAGGLE_INPUT.glob(f"**/{UNIT_JSON}")):
        try:
            values = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if values.get("unit") == unit and values.get("fingerprint") == fingerprint and values.get("state") == "stopped":
            found.append((int(values.get("session", 0)), values, record.parent / UNIT_TAR))
    if not found:
        return None
    _, values, tar = max(found, key=lambda item: item[0])
    return values, tar


def restore(fold_dir: Path, values: dict[str, Any], tar: Path) -> None:
    """Unpack the previous session's files (checked against its unit.json) into the unit's folder."""
    with tarfile.open(tar) as archive:
        for member in archive.getmembers():
            data = archive.extractfile(member).read() if member.isfile() else None
            if data is None or values["files"].get(member.name) != digest(data):
                raise SystemExit(f"error: {tar}: {member.name} does not match its unit.json; re-run make at home")
            artifacts.write_bytes(fold_dir / member.name, data)
    print(f"resuming from session {values['session']} (epoch {values.get('epochs_done')})", flush=True)


def pack(fold_dir: Path, settings: dict[str, Any], state: str, code: int, fingerprint: str) -> None:
    """unit.tar of the unit's folder, then unit.json (last) into /kaggle/working."""
    files, buffer = {}, io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(p for p in fold_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            name = path.relative_to(fold_dir).as_posix()
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
            files[name] = digest(data)
    working = paths.KAGGLE_WORKING
    artifacts.write_bytes(working / UNIT_TAR, buffer.getvalue())
    epochs = 0
    if (fold_dir / "log.csv").is_file():
        epochs = max(len((fold_dir / "log.csv").read_text().strip().splitlines()) - 1, 0)
    record = {"unit": settings["unit"], "nonce": settings["nonce"], "session": settings["session"], "state": state,
              "exit_code": code, "fingerprint": fingerprint, "epochs_done": epochs, "files": files,
              "tar": digest(buffer.getvalue())}  # fmt: skip
    artifacts.write_json(working / UNIT_JSON, record)
    print(f"unit {settings['unit']}: {state} after {epochs} epoch(s); {len(files)} file(s) in {UNIT_TAR}", flush=True)


def run_unit(bundle: Path, settings: dict[str, Any]) -> int:
    """Train the unit for what is left of the session's budget; 0 when done or stopped, else train's exit code."""
    from pipeline.core.bag import member_config
    from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config

    manifest = json.loads((bundle / "bundle.json").read_text())
    config = stage(bundle, manifest)
    fold, seed = int(settings["fold"]), (None if settings.get("seed") in (None, "") else int(settings["seed"]))
    cfg = member_config(load_config(config), seed)
    fp = fingerprint(cfg, TRAINING_SECTIONS)
    fold_dir = paths.for_config(cfg).member(seed).fold_dir(fold)
    previous = previous_output(settings["unit"], fp)
    if previous is not None:
        restore(fold_dir, *previous)
    # What is left of the session's budget; at least a moment, since training always does a step before it stops.
    budget = max(float(settings["time_budget"]) - (time.monotonic() - STARTED), 0.001)
    args = ["train", "--config", str(config), "--fold", str(fold), "--set", f"train.time_budget={budget:.3f}"]
    if seed is not None:
        args += ["--seed", str(seed)]
    print(f"unit {settings['unit']}: training with a time budget of {budget:.3f} s", flush=True)
    code = subprocess.call([sys.executable, "-m", "pipeline", *args])  # the CLI's own contract: 0, 2 or 75
    from pipeline.core.errors import EXIT_STOPPED

    done = code == 0 and (fold_dir / "model.safetensors").is_file()
    state = "done" if done else "stopped" if code == EXIT_STOPPED else "failed"
    pack(fold_dir, settings, state, code, fp)
    os.environ.pop("PIPELINE_ROOT", None)
    return 0 if state in ("done", "stopped") else (code or 1)
