"""More client calls for kaggle-push, kaggle-submit and scores, each wrapped like pipeline.kaggle.client's own.

Inputs: a logged-in pipeline.kaggle.client.Kaggle. Outputs: plain values read from the official client's answers
(kaggle 2.2.x / kagglesdk), never fields the client cannot read:
    dataset_files     a dataset version's files and sizes (ListDatasetFiles), to check that every upload arrived
    kernel_version    a kernel's current version number and its last run's start (ListKernels): the session
                      status (GetKernelSessionStatus) carries no version
    follow_log        the kernel's log while it runs (the `kernels logs --follow` stream)
    gpu_quota         the weekly GPU hours used and allowed (`kaggle quota`)
    leaderboard       the public leaderboard's scores, best first (GetLeaderboard, every page)
Reads are retried and every failure is one UserError line (pipeline.kaggle.client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_PAGES = 200  # a server that never stops handing out page tokens must not loop forever


def dataset_files(kaggle: Any, ref: str, version: int) -> dict[str, int]:  # noqa: ANN401 - client.Kaggle
    """{file name: size in bytes} of version `version` of dataset `ref` as Kaggle lists it, every page."""
    found: dict[str, int] = {}
    token = None
    for _ in range(MAX_PAGES):
        answer = kaggle._read(ref, "list the files of dataset", lambda token=token: kaggle.api.dataset_list_files(
            f"{ref}/{version}", page_token=token, page_size=PAGE_SIZE), kind="dataset")  # fmt: skip
        for item in getattr(answer, "dataset_files", None) or getattr(answer, "files", None) or []:
            found[str(item.name)] = int(getattr(item, "total_bytes", 0) or 0)
        token = getattr(answer, "next_page_token", None)
        if not token:
            break
    return found


@dataclass(frozen=True)
class KernelVersion:
    """What Kaggle's kernel listing says about one kernel: its newest version and when its latest run started."""

    current: int | None
    last_run: datetime | None


def kernel_version(kaggle: Any, ref: str) -> KernelVersion:  # noqa: ANN401
    """The kernel's current version number and last run's start (ListKernels, the caller's own); None when unlisted."""
    owner, slug = ref.split("/", 1)
    listed = kaggle._read(ref, "list the kernel", lambda: kaggle.api.kernels_list(
        mine=True, search=slug, user=owner, page_size=PAGE_SIZE), kind="kernel") or []  # fmt: skip
    for item in listed:
        if str(getattr(item, "ref", "")).strip("/").removeprefix("code/").lower() == ref.lower():
            number = getattr(item, "current_version_number", None)
            return KernelVersion(int(number) if number else None, getattr(item, "last_run_time", None))
    return KernelVersion(None, None)


def follow_log(kaggle: Any, ref: str) -> Iterator[str]:  # noqa: ANN401
    """The kernel's log lines as Kaggle streams them (live while it runs, the stored log once it ended).

    A broken stream ends the iteration quietly: the log is a view, the status polls decide (wait.py)."""
    try:
        with kaggle.errors(ref, "stream the log of kernel", kind="kernel"):
            for event in kaggle.api.kernels_logs_stream(ref):
                data = event.get("data") if isinstance(event, dict) else None
                yield from str(data or "").splitlines()
    except UserError as exc:
        log.debug("log stream of %s ended: %s", ref, exc)


@dataclass(frozen=True)
class Quota:
    used_hours: float
    allowed_hours: float
    refresh: datetime | None

    @property
    def left_hours(self) -> float:
        return max(self.allowed_hours - self.used_hours, 0.0)


def gpu_quota(kaggle: Any) -> Quota | None:  # noqa: ANN401
    """This week's GPU quota (`kaggle quota`), or None when Kaggle gives none."""
    answer = kaggle._read("quota", "read the GPU quota", lambda: kaggle.api.quota_view(), kind="account")
    quota = getattr(answer, "gpu_quota", None)
    if quota is None or getattr(quota, "total_time_allowed", None) is None:
        return None
    used = quota.time_used.total_seconds() / 3600 if quota.time_used is not None else 0.0
    return Quota(used, quota.total_time_allowed.total_seconds() / 3600, getattr(answer, "quota_refresh_time", None))


def leaderboard(kaggle: Any, slug: str) -> list[tuple[str, float]]:  # noqa: ANN401
    """(team name, public score) of every team on `slug`'s public leaderboard, in Kaggle's order (best first).

    The request competition_leaderboard_view sends, page after page (it returns one page and prints the token)."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    def page(token: str | None) -> Any:  # noqa: ANN401
        request = ApiGetLeaderboardRequest()
        request.competition_name = slug
        request.page_size = PAGE_SIZE
        if token:
            request.page_token = token
        with kaggle.api.build_kaggle_client() as client:
            return client.competitions.competition_api_client.get_leaderboard(request)

    rows: list[tuple[str, float]] = []
    token = None
    for _ in range(MAX_PAGES):
        answer = kaggle._read(slug, "read the leaderboard", lambda token=token: page(token))
        for item in answer.submissions or []:
            try:
                rows.append((str(item.team_name or ""), float(item.score)))
            except (TypeError, ValueError):  # a team without a public score yet
                continue
        token = answer.next_page_token
        if not token or not answer.submissions:
            break
    return rows
