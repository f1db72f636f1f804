"""What submit and kaggle-submit check before they submit, and how they wait for Kaggle afterwards.

Before: `check_can_submit` asks Kaggle about the competition (closed? code-only?) and the account's remaining
submissions (today's, and the competition's total: `limited_by_total`), and refuses with one line naming the fix.
After: `wait_for_score` polls the submission until Kaggle has scored it (COMPLETE: its public score) or refused it
(ERROR: Kaggle's error_description, raised as a UserError); `wait_for_kernel` polls a pushed kernel's run until it
completes or fails. Progress goes to the log; the poll interval is PIPELINE_KAGGLE_POLL seconds (default 15).

`wait_for_kernel_version` waits for one pushed version's run. Kaggle's session status carries no version, and right
after a push it still answers the previous run's `complete` for a while; so an ended status counts only once this
run has been seen queued or running, or once the kernel listing says its current version is at least the pushed one
and its latest run started after the push. While the run goes on, its log is streamed into ours (`  | ` lines).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_WAIT = 1800.0  # seconds submit/kaggle-submit wait for the score (--wait / Make's WAIT; 0: do not wait)
KERNEL_DONE = ("complete",)
KERNEL_FAILED = ("error", "cancel_requested", "cancel_acknowledged")
STREAM_TRIES = 3  # log streams that may break without a new line before kaggle-submit only polls


def poll_seconds() -> float:
    try:
        return max(float(os.environ.get("PIPELINE_KAGGLE_POLL") or 15.0), 0.01)
    except ValueError:
        return 15.0


def check_can_submit(kaggle: Any, comp: str, csv_upload: bool) -> None:  # noqa: ANN401 - pipeline.kaggle.client.Kaggle
    """UserError when Kaggle would refuse a submission to `comp` now; `csv_upload`: a file, not a kernel's output."""
    info = kaggle.competition(comp)
    if info is not None:
        deadline = getattr(info, "deadline", None)
        if getattr(info, "submissions_disabled", False):
            raise UserError(f"'{comp}' takes no submissions any more (closed, deadline {deadline})")
        if isinstance(deadline, datetime) and (deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)) < (
            datetime.now(UTC)
        ):
            log.warning("warning: '%s' closed on %s: a late submission is scored but not ranked", comp, deadline)
        if csv_upload and getattr(info, "is_kernels_submissions_only", False):
            raise UserError(
                f"'{comp}' is a code competition: Kaggle scores a kernel's output, not an uploaded file; run "
                "`make kaggle-bundle kaggle-push kaggle-submit CONFIG=...`"
            )
    limits = limits_or_none(kaggle, comp)
    if limits is None or getattr(limits, "num_allowed_now", 1) > 0:
        return
    if getattr(limits, "limited_by_total", False):
        raise UserError(f"no submissions left for '{comp}': the competition's total limit is used up "
                        f"({limits.num_total} submitted)")  # fmt: skip
    if getattr(limits, "num_today", 0) > 0:  # all zeros: not on a team yet, which the first submission makes
        raise UserError(
            f"no submissions left today for '{comp}' ({limits.num_today} used); try again after midnight UTC"
        )


def limits_or_none(kaggle: Any, comp: str) -> Any:  # noqa: ANN401
    """Submission limits, or None: a hint only, so their absence never stops a submission."""
    try:
        return kaggle.submission_limits(comp)
    except UserError as exc:
        log.debug("submission limits unavailable: %s", exc)
        return None


def status_name(item: Any) -> str:  # noqa: ANN401 - ApiSubmission
    status = getattr(item, "status", None)
    return str(getattr(status, "name", status or "")).lower()


def wait_for_score(kaggle: Any, comp: str, ref: int, seconds: float) -> Any:  # noqa: ANN401
    """Poll submission `ref` until it is scored; the ApiSubmission, or None when `seconds` pass first.

    UserError with Kaggle's error_description when scoring failed.
    """
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    while True:
        item = kaggle.submission(comp, ref)
        status = status_name(item) if item is not None else "not listed yet"
        if status == "complete":
            return item
        if status == "error":
            reason = getattr(item, "error_description", None) or "no description given"
            raise UserError(f"Kaggle could not score submission #{ref} to '{comp}': {reason}")
        if time.monotonic() >= deadline:
            log.warning("warning: submission #%s is still %s after %.0f s; `make scores COMP=%s` shows it later",
                        ref, status, seconds, comp)  # fmt: skip
            return None
        log.info("submission #%s: %s (%.0f s)", ref, status, time.monotonic() - started)
        time.sleep(poll_seconds())


def wait_for_kernel(kaggle: Any, ref: str, seconds: float) -> tuple[str, str]:  # noqa: ANN401
    """Poll kernel `ref`'s latest run until it ends: (status, failure message). UserError when `seconds` pass."""
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    while True:
        status, failure = kaggle.kernel_status(ref)
        if status in KERNEL_DONE or status in KERNEL_FAILED:
            log.info("kernel %s: %s after %.0f s", ref, status, time.monotonic() - started)
            return status, failure
        if time.monotonic() >= deadline:
            raise UserError(f"kernel {ref} is still {status} after {seconds:.0f} s; re-run `make kaggle-submit` "
                            f"later (it waits again), or see https://www.kaggle.com/code/{ref}")  # fmt: skip
        log.info("kernel %s: %s (%.0f s)", ref, status, time.monotonic() - started)
        time.sleep(poll_seconds())


def score_line(comp: str, ref: int, item: Any) -> str:  # noqa: ANN401
    """What the user sees once a submission is scored."""
    return f"{comp}: submission #{ref} scored {getattr(item, 'public_score', '') or 'n/a'} (public leaderboard)"


def wait_seconds(args: argparse.Namespace) -> float:
    wait = getattr(args, "wait", None)
    wait = DEFAULT_WAIT if wait is None else float(wait)
    if wait < 0:
        raise UserError(f"--wait {wait:g} (Make: WAIT=): must be 0 (do not wait) or more seconds")
    return wait


def finish(kaggle: Any, comp: str, ref: int, wait: float) -> None:  # noqa: ANN401 - pipeline.kaggle.client.Kaggle
    """Wait for submission `ref`'s score and print it (or say where to look), then the submissions left."""
    if wait > 0 and ref:
        item = wait_for_score(kaggle, comp, ref, wait)
        if item is not None:
            print(score_line(comp, ref, item), flush=True)
    else:
        log.info("not waiting for the score (WAIT=0); `make scores COMP=%s` shows it once Kaggle has it", comp)
    limits = limits_or_none(kaggle, comp)
    if limits is not None:
        log.info("%d submission(s) left today; `make scores COMP=%s` shows the leaderboard", limits.num_allowed_now,
                 comp)  # fmt: skip


def _is_this_run(kaggle: Any, ref: str, version: int, pushed_at: datetime | None) -> bool:  # noqa: ANN401
    """The kernel listing says version `version` (or newer) exists and its latest run started after the push."""
    from pipeline.kaggle.calls import kernel_version

    info = kernel_version(kaggle, ref)
    if info.current is None or info.current < version or info.last_run is None or pushed_at is None:
        return False
    last = info.last_run if info.last_run.tzinfo else info.last_run.replace(tzinfo=UTC)
    return last >= pushed_at


class _LogFollower:
    """Streams the running kernel's log into ours, each line once, across reconnects (the server replays)."""

    def __init__(self, kaggle: Any, ref: str, enabled: bool) -> None:  # noqa: ANN401
        self.kaggle, self.ref, self.seen, self.tries = kaggle, ref, 0, STREAM_TRIES if enabled else 0

    def follow(self) -> None:
        from pipeline.kaggle.calls import follow_log

        if self.tries <= 0:
            return
        before = self.seen
        for index, line in enumerate(follow_log(self.kaggle, self.ref)):
            if index >= self.seen:
                log.info("  | %s", line)
                self.seen = index + 1
        self.tries = STREAM_TRIES if self.seen > before else self.tries - 1


def wait_for_kernel_version(kaggle: Any, ref: str, version: int | None, seconds: float,  # noqa: ANN401
                            pushed_at: datetime | None = None, follow: bool = True) -> tuple[str, str]:  # fmt: skip
    """Wait for the run of version `version` of kernel `ref` (pushed at `pushed_at`) to end: (status, failure).

    UserError when `seconds` pass first. `version` None (a push recorded before versions were): the latest run."""
    deadline, started_at = time.monotonic() + seconds, time.monotonic()
    started = version is None  # without a version there is nothing to tell apart
    follower = _LogFollower(kaggle, ref, follow)
    while True:
        status, failure = kaggle.kernel_status(ref)
        ended = status in KERNEL_DONE or status in KERNEL_FAILED
        if not ended:
            started = True  # a run that began after the push: version `version`'s, or a newer one's
        elif started or _is_this_run(kaggle, ref, int(version or 0), pushed_at):
            log.info("kernel %s version %s: %s after %.0f s", ref, version or "?", status,
                     time.monotonic() - started_at)  # fmt: skip
            return status, failure
        else:
            status = f"waiting for version {version} to start (Kaggle still reports the previous run: {status})"
        if time.monotonic() >= deadline:
            raise UserError(f"kernel {ref} version {version or '?'} is still {status} after {seconds:.0f} s; "
                            "re-run `make kaggle-submit` later (it waits again), or see "
                            f"https://www.kaggle.com/code/{ref}")  # fmt: skip
        log.info("kernel %s: %s (%.0f s)", ref, status, time.monotonic() - started_at)
        if not ended:
            follower.follow()  # returns when the run's log ends (or the stream breaks): then poll again
        time.sleep(poll_seconds())


LOG_LINES = 20


def log_tail(files: list[Path], lines: int = LOG_LINES) -> list[str]:
    """The last `lines` lines of a kernel's log (Kaggle's JSON list of {stream_name, time, data}, or plain text)."""
    logs = [f for f in files if f.suffix == ".log"]
    if not logs:
        return []
    text = logs[0].read_text(errors="replace")
    try:
        text = "".join(str(entry.get("data", "")) for entry in json.loads(text) if isinstance(entry, dict))
    except ValueError:
        pass  # already plain text
    return text.rstrip().splitlines()[-lines:]
