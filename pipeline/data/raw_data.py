"""Competition files placed under data/raw/<comp>/ by hand (the website's zip, unzipped): checked and adopted.

Reads data/raw/<comp>/; writes its `.complete` stamp (the same stamp `download` publishes), so Make's download step
is done. Used by download and init.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pipeline.core import paths
from pipeline.core.artifacts import write_json
from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

# What an unfinished download leaves: the kaggle client's resume marker, Chrome's and Firefox's partial files.
PARTIAL_SUFFIXES = (".kaggle-partial", ".crdownload", ".part")


def adopt(comp: str) -> bool:
    """Adopt data/raw/<comp>/ placed by hand (no stamp): check it, write the stamp. False when there is no folder.

    UserError when the folder holds a partial download or nothing at all: the fix is named, nothing is stamped.
    """
    target = paths.local_raw_dir(comp)
    stamp = target / ".complete"
    if stamp.exists() or not target.is_dir():
        return stamp.exists()
    files = [p for p in target.rglob("*") if p.is_file()]
    partial = sorted(str(p.relative_to(target)) for p in files if p.name.endswith(PARTIAL_SUFFIXES))
    if partial:
        raise UserError(
            f"{target} holds a partial download ({', '.join(partial[:3])}); delete {target} and re-run "
            f"`make download COMP={comp}` (or finish the download and unzip it there)"
        )
    visible = [p for p in files if not any(part.startswith(".") for part in p.relative_to(target).parts)]
    if not visible:
        raise UserError(f"{target} is empty; unzip the competition's files there, or delete it and `make download`")
    if len(visible) == 1 and visible[0].name == f"{comp}.zip":
        raise UserError(f"{visible[0]} is not unzipped; unzip it in {target} and delete the zip, then re-run")
    write_json(stamp, {"comp": comp, "source": "placed by hand", "files": len(visible),
                       "completed": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
    log.info("adopted data/raw/%s (placed by hand): %d files checked, %s written", comp, len(visible), stamp.name)
    return True
