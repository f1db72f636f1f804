"""RUNNER=kaggle at home: check a finished unit's files from its notebook, then land them where a local run writes.

Reads a session's downloaded output (<unit>.unit.json, <unit>.unit.tar: pipeline.kaggle.remote_unit) from the
notebook's staging folder (its first unit's fold<k>/.remote/v<version>/); writes fold<k>/[seed<s>/]
model.safetensors, oof_plain.csv, log.csv (model.safetensors last, each atomically) and the experiment's resolved
config.yaml, as `train` does. Nothing lands unless the tar's digest, every file's digest, the training fingerprint
and the pseudo/distillation sources the weights carry all match what home expects: a half-downloaded or foreign
output never looks finished. A notebook that trained two units lands each on its own.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

from pipeline.core import artifacts, paths
from pipeline.core.bag import member_config
from pipeline.core.config import TRAINING_SECTIONS, Config, dump_yaml, fingerprint, to_dict
from pipeline.core.errors import UserError
from pipeline.kaggle.remote_state import Unit
from pipeline.kaggle.remote_unit import record_name, tar_name

WEIGHTS = "model.safetensors"


def read_record(folder: Path, unit: Unit) -> dict[str, Any] | None:
    """The unit's unit.json from a downloaded output folder, or None when the session left none (or an unreadable
    one, or another unit's)."""
    path = folder / record_name(unit.key)
    if not path.is_file():
        return None
    try:
        record = artifacts.read_json(path)
    except UserError:
        return None
    return record if isinstance(record, dict) and record.get("unit") == unit.key else None


def unpack(folder: Path, record: dict[str, Any], where: str) -> dict[str, bytes]:
    """The unit's tar's files, each checked against its unit.json's digests; UserError naming what does not match."""
    tar = folder / tar_name(str(record.get("unit")))
    data = tar.read_bytes() if tar.is_file() else b""
    if hashlib.sha256(data).hexdigest() != record.get("tar"):
        raise UserError(f"{where}: {tar} is missing or not what the notebook wrote (digest differs); the download "
                        "was cut short or altered: re-run make to fetch it again")  # fmt: skip
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            if not member.isfile() or member.name.startswith(("/", "..")) or "/../" in member.name:
                raise UserError(f"{where}: {tar} holds {member.name!r}, which is no file of a unit's folder")
            content = archive.extractfile(member).read()
            if hashlib.sha256(content).hexdigest() != record.get("files", {}).get(member.name):
                raise UserError(f"{where}: {member.name} in {tar} does not match its digest in unit.json")
            files[member.name] = content
    if set(files) != set(record.get("files", {})):
        raise UserError(f"{where}: {tar} lacks {sorted(set(record.get('files', {})) - set(files))}")
    return files


def check_weights(cfg: Config, unit: Unit, files: dict[str, bytes], staging: Path, where: str) -> None:
    """The weights were trained under this config's fingerprint and on these sources, as `train` would refuse."""
    from pipeline.data.sources import sources_stamp
    from pipeline.training.checkpoint import trained_metadata

    if WEIGHTS not in files:
        raise UserError(f"{where}: the notebook finished without {WEIGHTS}; re-run make to train the unit again")
    member = member_config(cfg, unit.seed)
    probe = staging / WEIGHTS
    artifacts.write_bytes(probe, files[WEIGHTS])
    metadata = trained_metadata(probe)
    expected = fingerprint(member, TRAINING_SECTIONS)
    if metadata.get("fingerprint") != expected:
        raise UserError(f"{where}: the notebook's weights were trained under fingerprint "
                        f"{metadata.get('fingerprint')}, this config's is {expected}; the config changed while it ran: "
                        "re-run make to train the unit under the current config")  # fmt: skip
    if metadata.get("sources", "") != sources_stamp(member):
        raise UserError(f"{where}: the notebook trained on other train.pseudo / train.soft_labels predictions than "
                        "home has now; re-run make to train the unit again")  # fmt: skip


def land(cfg: Config, unit: Unit, folder: Path, record: dict[str, Any]) -> Path:
    """Check the session's output and write its files into the unit's folder (weights last); the weights' path."""
    where = f"{unit.label} (kernel session {record.get('session')})"
    files = unpack(folder, record, where)
    check_weights(cfg, unit, files, folder / unit.key, where)
    out = paths.for_config(cfg)
    fold_dir = out.member(unit.seed).fold_dir(unit.fold)
    for name, content in sorted(files.items()):
        if name != WEIGHTS and not name.startswith("work/"):
            artifacts.write_bytes(fold_dir / name, content)
    shutil.rmtree(fold_dir / "work", ignore_errors=True)  # training deletes its checkpoint when it finishes
    artifacts.write_text(out.resolved_config, dump_yaml(to_dict(cfg)))  # as train writes it: the experiment's
    return artifacts.write_bytes(fold_dir / WEIGHTS, files[WEIGHTS])  # the unit's output: last
