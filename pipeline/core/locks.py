"""One process per fold (or sweep): an advisory lock (fcntl.flock) on data/runs/<comp>/<exp>/fold<k>/.lock, or a
sweep's .lock. The one lock helper of the package.

Two `train` (or `predict`) runs of the same fold at once would write the same checkpoint and weights; the second
one stops at once with one `error:` line naming who holds the fold (pid, host, stage, since when). The kernel
drops the lock when its holder exits, however it exits (kill -9 included), so a lock is never stale; the small
file stays and only says who held it last.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import UserError


def fold_lock(path: Path, fold: int, stage: str) -> contextlib.AbstractContextManager[None]:
    """Hold a fold's lock while the block runs, or raise UserError naming the current holder."""
    return exclusive(path, f"fold {fold}", stage)


@contextlib.contextmanager
def exclusive(path: Path, what: str, stage: str) -> Iterator[None]:
    """Hold `path` exclusively while the block runs, or raise UserError saying `what` is busy and who holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's whole life
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            since = time.strftime("%H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
            raise UserError(
                f"{what} is busy: `{holder.get('stage', '?')}` holds {path} (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {since}); wait for it to finish or stop that process, then re-run"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                 "since": time.time()}))  # fmt: skip
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
