"""download: fetch a competition's files into data/raw/<comp>/ (immutable afterwards).

Reads: the Kaggle API (credentials as pipeline.kaggle.client describes), or the competition's mount inside a Kernel
(/kaggle/input/competitions/<comp> or /kaggle/input/<comp>: paths.mounted_competition), used in place (no client,
no copy). `--comp demo` materialises the offline demo competition instead.
Writes: data/raw/<comp>/ holding exactly what the competition zip holds, plus the stamp data/raw/<comp>/.complete
(JSON: the archive, its file count, and `evaluation_metric`, the competition's metric name from Kaggle's metadata,
which `init` maps to the pipeline's metric).

Nothing half-done ever looks complete: the zip lands in data/raw/.<comp>.download/ (the client resumes a partial
file there on the next run), is checked (entry names, symlinks, every CRC) before anything is extracted, then is
extracted into data/raw/.<comp>.extracting/. The stamp is the last file written there, and one rename of that
folder publishes data/raw/<comp>/ with its stamp. A re-run with the stamp present does nothing (`--force` redoes).

So a data/raw/<comp>/ without the stamp was not written by a download: its files were placed by hand (the zip from
the competition's website, unzipped there). `adopt` checks such a folder, says so and writes the stamp; a folder
that still holds a partial download (the client's or a browser's) is refused instead.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import stat
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pipeline.core import paths
from pipeline.core.artifacts import publish, write_json
from pipeline.core.cli import SLUG, comp_from_args  # noqa: F401 - re-exported
from pipeline.core.errors import UserError
from pipeline.data.raw_data import PARTIAL_SUFFIXES, adopt  # noqa: F401 - PARTIAL_SUFFIXES: re-exported

if TYPE_CHECKING:
    from pipeline.kaggle.client import Kaggle

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    comp = comp_from_args(args)
    if comp == "demo":
        from pipeline.data import demo  # the offline demo needs no Kaggle and pulls in its own dependencies

        demo.materialise(paths.raw_dir("demo"))
        return
    mounted = paths.mounted_competition(comp)
    if mounted is not None:
        log.info("using %s as mounted by the Kaggle Kernel: nothing to download", mounted)
        return
    download(comp, force=bool(getattr(args, "force", False)))


def download(comp: str, force: bool = False) -> Path:
    """Download and extract `comp` into data/raw/<comp>/ unless its stamp says that is done. Returns the folder."""
    target = paths.local_raw_dir(comp)
    stamp = target / ".complete"
    if stamp.exists() and not force:
        log.info("%s is complete (%s exists); nothing to do (--force downloads again)", target, stamp.name)
        return target
    if target.exists() and not force and adopt(comp):
        return target
    from pipeline.kaggle.client import Kaggle  # imports the client: only when the network is really needed

    staging = target.parent / f".{comp}.download"
    client = Kaggle()
    archive = client.download_files(comp, staging, force=force)
    log.info("downloaded %s (%.1f MB); checking it", archive.name, archive.stat().st_size / 1e6)
    extracted = target.parent / f".{comp}.extracting"
    count = extract(archive, extracted)
    write_json(
        extracted / stamp.name,
        {
            "comp": comp,
            "source": "kaggle api",
            "archive": archive.name,
            "archive_bytes": archive.stat().st_size,
            "files": count,
            "completed": datetime.now(UTC).isoformat(timespec="seconds"),
            "evaluation_metric": evaluation_metric(client, comp),  # init maps it (pipeline.core.kaggle_metrics)
        },
    )
    publish(extracted, target)
    shutil.rmtree(staging, ignore_errors=True)  # the zip: every byte of it now lives in target
    log.info("wrote %s (%d files)", target, count)
    return target


def evaluation_metric(client: Kaggle, comp: str) -> str | None:
    """The competition's metric name as Kaggle's metadata gives it (ApiCompetition.evaluation_metric), or None when
    the lookup fails or names none: the data is what the user asked for, so a missing name never fails the download.
    """
    try:
        found = client.competition(comp)
    except UserError as exc:
        log.warning("download: could not read %s's metadata (%s); init will ask for `metric:`", comp, exc)
        return None
    name = str(getattr(found, "evaluation_metric", "") or "").strip()
    if name:
        log.info("download: Kaggle scores %s with %r", comp, name)
    return name or None


def unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry could write outside the target folder, or None if it is safe."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:(/|$)", name):  # /x or a drive (C:/x); a:b.txt is a name
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def check_archive(archive: Path) -> list[zipfile.ZipInfo]:
    """Every entry of `archive`, after checking names, links and every CRC (testzip); UserError naming the problem."""
    try:
        with zipfile.ZipFile(archive) as handle:
            entries = handle.infolist()
            for info in entries:
                reason = unsafe_reason(info)
                if reason:
                    raise UserError(f"{archive}: entry {info.filename!r} is {reason}; refusing to extract anything")
            broken = handle.testzip()
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise UserError(
            f"{archive.name} from Kaggle is corrupt or truncated ({exc}); nothing was extracted; "
            "re-run download to fetch it again"
        ) from exc
    if broken is not None:
        raise UserError(
            f"{archive.name} from Kaggle is corrupt: entry {broken!r} fails its CRC check; nothing was extracted; "
            "re-run download to fetch it again"
        )
    return entries


def extract(archive: Path, folder: Path) -> int:
    """Check `archive`, then extract it into a fresh `folder`; the number of files extracted."""
    try:
        entries = check_archive(archive)
    except UserError:
        _discard(archive)  # a bad zip is never resumed or reused: the next run fetches a fresh one
        raise
    shutil.rmtree(folder, ignore_errors=True)  # left over by an interrupted run
    folder.mkdir(parents=True)
    root = folder.resolve()
    count = 0
    try:
        with zipfile.ZipFile(archive) as handle:
            for info in entries:
                dest = (root / info.filename.replace("\\", "/")).resolve()
                if root not in dest.parents and dest != root:  # unsafe_reason refused these already; belt and braces
                    raise UserError(f"{archive}: entry {info.filename!r} points outside {folder}; refusing it")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                count += 1
    except OSError as exc:
        raise UserError(
            f"could not extract {archive.name} into {folder}: {exc}; free space or fix it, then re-run"
        ) from exc
    return count


def _discard(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    Path(f"{archive}.kaggle-partial").unlink(missing_ok=True)  # the client's resume marker for it
