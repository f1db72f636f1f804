"""Inside a RUNNER=kaggle notebook: train its units (a fold, or a seed-bag member; two at once on a T4 x2, one per
GPU) and leave each one's result in /kaggle/working.

Reads the training bundle (pipeline.kaggle.remote_bundle: bundle.json of kind "train") from the notebook's inputs,
the competition where Kaggle mounts it (paths.raw_dir), and, for a unit that resumes, its previous session's
output (<unit>.unit.json + <unit>.unit.tar, mounted from the kernel that holds its last checkpoint). Lays the bundle
out under the project root ($PIPELINE_ROOT, a temporary folder), restores each unit's checkpoint, then runs the
CLI's own `train --fold K [--seed S]` per unit with train.time_budget set to what is left of the session's budget:
one process per unit, all at once, each on its own GPU (CUDA_VISIBLE_DEVICES) when the notebook packs several.
Every line a unit's process prints goes to the notebook's log prefixed with `[<unit>] `, so home can tell the
units' progress and last lines apart. Writes into /kaggle/working, per unit:

    <unit>.unit.tar    the unit's folder as training left it (relative to fold<k>/[seed<s>/]): model.safetensors,
                       oof_plain.csv, log.csv when done; log.csv and work/last.pt when the budget stopped it
    <unit>.unit.json   written last: unit, nonce (which push this session answers), session, state (done | stopped |
                       failed), exit code, fingerprint, epochs done, and the SHA-256 of every file in the tar

Exits 0 when any unit is done or stopped (the session completes and keeps every unit's output; home reads each
unit's state from its unit.json), else the first failed unit's exit code, so Kaggle marks the session as failed.
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths

log = logging.getLogger(__name__)

STARTED = time.monotonic()  # imported right after the install: close to the session's start
_PRINT = threading.Lock()  # the units' processes share the notebook's log: one whole line at a time


def record_name(unit: str) -> str:
    """The unit's unit.json in a session's output (flat: Kaggle's output listing and mounts are files by name)."""
    return f"{unit}.unit.json"


def tar_name(unit: str) -> str:
    return f"{unit}.unit.tar"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def say(unit: str, line: str) -> None:
    with _PRINT:
        sys.stdout.write(f"[{unit}] {line.rstrip()}\n")
        sys.stdout.flush()


@dataclass
class UnitRun:
    """One unit of this notebook: its SETTINGS entry, its config's fingerprint, its folder, its training process."""

    spec: dict[str, Any]
    fingerprint: str
    fold_dir: Path
    process: subprocess.Popen | None = None
    relay: threading.Thread | None = None
    state: str = ""
    code: int = 0

    @property
    def key(self) -> str:
        return str(self.spec["unit"])


def unit_specs(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The notebook's units: SETTINGS' `units`, or the single unit of a notebook that trains one."""
    if settings.get("units"):
        return list(settings["units"])
    return [{key: settings.get(key, "") for key in ("unit", "fold", "seed", "session")}]


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
    for record in sorted(paths.KAGGLE_INPUT.glob(f"**/{record_name(unit)}")):
        try:
            values = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if values.get("unit") == unit and values.get("fingerprint") == fingerprint and values.get("state") == "stopped":
            found.append((int(values.get("session", 0)), values, record.parent / tar_name(unit)))
    if not found:
        return None
    _, values, tar = max(found, key=lambda item: item[0])
    return values, tar


def restore(run: UnitRun, values: dict[str, Any], tar: Path) -> bool:
    """Unpack the previous session's files (checked against its unit.json) into the unit's folder; False (and the
    unit fails, the others go on) when they do not match."""
    with tarfile.open(tar) as archive:
        for member in archive.getmembers():
            data = archive.extractfile(member).read() if member.isfile() else None
            if data is None or values["files"].get(member.name) != digest(data):
                say(run.key, f"error: {tar}: {member.name} does not match its unit.json; re-run make at home")
                return False
            artifacts.write_bytes(run.fold_dir / member.name, data)
    say(run.key, f"resuming from session {values['session']} (epoch {values.get('epochs_done')})")
    return True


def pack(run: UnitRun, settings: dict[str, Any]) -> None:
    """The unit's tar of its folder, then its unit.json (last) into /kaggle/working."""
    files, buffer = {}, io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(p for p in run.fold_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            name = path.relative_to(run.fold_dir).as_posix()
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
            files[name] = digest(data)
    working = paths.KAGGLE_WORKING
    artifacts.write_bytes(working / tar_name(run.key), buffer.getvalue())
    epochs = 0
    if (run.fold_dir / "log.csv").is_file():
        epochs = max(len((run.fold_dir / "log.csv").read_text().strip().splitlines()) - 1, 0)
    record = {"unit": run.key, "nonce": settings["nonce"], "session": int(run.spec["session"]), "state": run.state,
              "exit_code": run.code, "fingerprint": run.fingerprint, "epochs_done": epochs, "files": files,
              "tar": digest(buffer.getvalue())}  # fmt: skip
    artifacts.write_json(working / record_name(run.key), record)
    with _PRINT:  # not one of the unit's own lines (`[<unit>] `): home shows those as the unit's last lines
        print(f"unit {run.key}: {run.state} after {epochs} epoch(s); {len(files)} file(s) in {tar_name(run.key)}",
              flush=True)  # fmt: skip


def prepare(config: Path, spec: dict[str, Any]) -> UnitRun:
    """The unit's member config, fingerprint and folder, its previous session's checkpoint restored."""
    from pipeline.core.bag import member_config
    from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config

    seed = None if spec.get("seed") in (None, "") else int(spec["seed"])
    cfg = member_config(load_config(config), seed)
    fp = fingerprint(cfg, TRAINING_SECTIONS)
    run = UnitRun(spec, fp, paths.for_config(cfg).member(seed).fold_dir(int(spec["fold"])))
    previous = previous_output(run.key, fp)
    if previous is not None and not restore(run, *previous):
        run.state, run.code = "failed", 2
    return run


def start(run: UnitRun, config: Path, budget: float, gpu: int | None) -> None:
    """The CLI's own `train` for the unit in a process of its own (on GPU `gpu` when the notebook packs units)."""
    args = ["train", "--config", str(config), "--fold", str(run.spec["fold"]), "--set",
            f"train.time_budget={budget:.3f}"]  # fmt: skip
    if run.spec.get("seed") not in (None, ""):
        args += ["--seed", str(run.spec["seed"])]
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # as FOLD_GPUS does at home: each unit alone on its GPU
    say(run.key, f"training with a time budget of {budget:.3f} s" + (f" on GPU {gpu}" if gpu is not None else ""))
    run.process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")  # fmt: skip

    def relay() -> None:
        for line in run.process.stdout:
            say(run.key, line)

    run.relay = threading.Thread(target=relay, daemon=True)
    run.relay.start()


def finish(run: UnitRun) -> None:
    """Wait for the unit's process; its state from the CLI's contract (0 done, EXIT_STOPPED stopped, else failed)."""
    from pipeline.core.errors import EXIT_STOPPED

    run.code = run.process.wait()
    run.relay.join()
    done = run.code == 0 and (run.fold_dir / "model.safetensors").is_file()
    run.state = "done" if done else "stopped" if run.code == EXIT_STOPPED else "failed"


def run_unit(bundle: Path, settings: dict[str, Any]) -> int:
    """Train the notebook's units at once for what is left of the session's budget; 0 when any is done or stopped,
    else the first failed one's exit code."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    config = stage(bundle, manifest)
    runs = [prepare(config, spec) for spec in unit_specs(settings)]
    # What is left of the session's budget; at least a moment, since training always does a step before it stops.
    budget = max(float(settings["time_budget"]) - (time.monotonic() - STARTED), 0.001)
    packed = len(runs) > 1
    for gpu, run in enumerate(runs):
        if not run.state:
            start(run, config, budget, gpu if packed else None)
    for run in runs:
        if run.process is not None:
            finish(run)
        pack(run, settings)
    os.environ.pop("PIPELINE_ROOT", None)
    if any(run.state in ("done", "stopped") for run in runs):
        return 0
    return next(run.code for run in runs if run.code) or 1
