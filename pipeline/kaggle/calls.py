"""More client calls for kaggle-push, kaggle-submit and scores, each wrapped like pipeline.kaggle.client's own.

Inputs: a logged-in pipeline.kaggle.client.Kaggle. Outputs: plain values read from the official client's answers
(kaggle 2.2.x / kagglesdk), never fields the client cannot read:
    dataset_files     a dataset version's files and sizes (ListDatasetFiles), to check that every upload arrived
    model_version     a Kaggle Model instance's current version (GetModelInstance; None: not created yet)
    create_model, create_model_instance, create_model_version
                      the Model, its instance (version 1) and further versions (`kaggle models [instances
                      [versions]] create`), each upload of a folder checked like a dataset's
    model_files       a Model instance version's files and sizes (ListModelInstanceVersionFiles)
    kernel_version    a kernel's current version number and its last run's start (ListKernels): the session
                      status (GetKernelSessionStatus) carries no version
    follow_log        the kernel's log while it runs (the `kernels logs --follow` stream)
    gpu_quota         the weekly GPU hours used and allowed (`kaggle quota`)
    leaderboard       the public leaderboard's scores, best first (GetLeaderboard, every page)
Reads are retried and every failure is one UserError line (pipeline.kaggle.client).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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


def _not_created(kaggle: Any, exc: UserError, ref: str) -> bool:  # noqa: ANN401
    """Kaggle answers 403, not 404, for what the caller cannot see, which includes what does not exist yet: on the
    caller's own slug a 403 (or 404) means "not created yet" (the create call decides), on another's a refusal."""
    import requests

    cause = exc.__cause__
    code = (
        getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(cause, requests.HTTPError)
        else None
    )
    own = (kaggle.credentials.username or "").lower() == ref.split("/", 1)[0].lower()
    return code == 404 or (code == 403 and own)


def model_exists(kaggle: Any, model: str) -> bool:  # noqa: ANN401
    """Kaggle Model `owner/slug` exists (GetModel)."""
    try:
        kaggle._read(model, "read the Model", lambda: kaggle.api.model_get(model), kind="model")
    except UserError as exc:
        if _not_created(kaggle, exc, model):
            return False
        raise
    return True


def model_version(kaggle: Any, instance: str) -> int | None:  # noqa: ANN401
    """The current version number of Model instance `owner/slug/framework/instance`, None when it does not exist."""
    try:
        answer = kaggle._read(instance, "read the Model instance", lambda: kaggle.api.model_instance_get(instance),
                              kind="model")  # fmt: skip
    except UserError as exc:
        if _not_created(kaggle, exc, instance):
            return None
        raise
    return int(getattr(answer, "version_number", 0) or 0)


def _model_answer(kaggle: Any, ref: str, answer: Any, action: str) -> str:  # noqa: ANN401
    """The client reports a refused Model write in the answer (`error`), not by raising: check it; the URL."""
    from pipeline.kaggle.client import scrub

    error = str(getattr(answer, "error", None) or "")
    if error:
        raise UserError(f"Kaggle did not {action} '{ref}': {scrub(error, kaggle.credentials)}")
    return str(getattr(answer, "url", None) or f"https://www.kaggle.com/models/{ref.split('/')[0]}/{ref.split('/')[1]}")


def create_model(kaggle: Any, model: str, folder: Path) -> str:  # noqa: ANN401
    """Create Kaggle Model `model` from `folder`'s model-metadata.json (`kaggle models create`); its URL."""
    answer = kaggle._write(model, "create the Model", lambda: kaggle.api.model_create_new(str(folder)), kind="model")
    return _model_answer(kaggle, model, answer, "create the Model")


def create_model_instance(kaggle: Any, instance: str, folder: Path) -> str:  # noqa: ANN401
    """Upload every file in `folder` as the first version of the instance its model-instance-metadata.json names
    (`kaggle models instances create`); its URL. A file whose upload failed is skipped by the client: see
    model_files."""
    quiet = not sys.stderr.isatty()
    answer = kaggle._write(instance, "create the Model instance", lambda: kaggle.api.model_instance_create(
        str(folder), quiet=quiet, dir_mode="skip"), kind="model")  # fmt: skip
    return _model_answer(kaggle, instance, answer, "create the Model instance")


def create_model_version(kaggle: Any, instance: str, folder: Path, notes: str) -> str:  # noqa: ANN401
    """Upload every file in `folder` as a new version of Model instance `instance`
    (`kaggle models instances versions create`); its URL."""
    quiet = not sys.stderr.isatty()
    answer = kaggle._write(instance, "upload a new version of the Model instance",
                           lambda: kaggle.api.model_instance_version_create(instance, str(folder), notes, quiet=quiet,
                                                                            dir_mode="skip"), kind="model")  # fmt: skip
    return _model_answer(kaggle, instance, answer, "upload a new version of the Model instance")


def model_files(kaggle: Any, instance: str, version: int) -> dict[str, int]:  # noqa: ANN401
    """{file name: size in bytes} of version `version` of Model instance `instance` as Kaggle lists it, every page."""
    found: dict[str, int] = {}
    token = None
    for _ in range(MAX_PAGES):
        answer = kaggle._read(instance, "list the files of the Model instance", lambda token=token:
                              kaggle.api.model_instance_version_files(f"{instance}/{version}", page_token=token,
                                                                      page_size=PAGE_SIZE), kind="model")  # fmt: skip
        for item in getattr(answer, "files", None) or []:
            found[str(item.name)] = int(getattr(item, "size", 0) or 0)
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
