"""Thin wrappers around the official Kaggle client (kaggle 2.2.x, Python API) with error translation.

Every failure of the client becomes one UserError line that says what to do: bad credentials (401), a 403 with its
likely cause (rules not accepted, competition closed, team-merger deadline), unknown competition (404), rate limits
(429, with Retry-After), no connection, a broken download. Every call has a timeout and reads are retried
(pipeline.kaggle.retry); writes are tried once. The API key is never printed, logged or written: messages and the
client's own chatter pass through `scrub` first.

Credentials are checked (pipeline.kaggle.auth) before `import kaggle`: importing it authenticates at once (an access
token is introspected by a call to Kaggle), and without credentials it prints a page of help text on stdout and
calls exit. The timeouts are installed before that import, so the introspection cannot hang; when the client's own
check fails (kaggle 2.2.4 swallows the exit and stays logged out) `Kaggle()` asks once more itself, and names what
failed: the token Kaggle rejected (its source), or the network. The client also reads its environment
(KAGGLE_API_ENVIRONMENT, VERBOSE) at import time, which is why tests run the stages in a subprocess.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.kaggle import retry as kaggle_retry
from pipeline.kaggle.auth import (  # noqa: F401 - re-exported: callers import the credentials check from here
    CREDENTIAL_HELP,
    TOKEN_URL,
    Credentials,
    check_credentials,
    config_dir,
    scrub,
    token_source,
)

log = logging.getLogger(__name__)

RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"
# kaggle 2.2.4 returns this message instead of raising when the upload of a submission file fails.
UPLOAD_FAILED_MESSAGE = "Could not submit to competition"


@contextlib.contextmanager
def _client_output(credentials: Credentials | None) -> Iterator[None]:
    """Route the client's print() chatter (stdout) to our debug log, scrubbed: the CLI's stdout stays ours."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("kaggle: %s", scrub(line, credentials))


class Kaggle:
    """The authenticated client plus what error messages need (slug-independent)."""

    def __init__(self) -> None:
        self.credentials = check_credentials()
        # VERBOSE makes the client print request headers, Authorization included: never let it.
        for name in ("VERBOSE", "VERBOSE_OUTPUT"):
            os.environ.pop(name, None)
        kaggle_retry.install_timeouts()  # the client sends its requests without any timeout, the import's included
        try:
            with _client_output(self.credentials):
                import kaggle  # authenticates on import: only after the credentials check
        except OSError as exc:  # it creates its config folder at import
            raise UserError(f"the Kaggle client cannot start: {exc}; check KAGGLE_CONFIG_DIR and HOME") from exc
        except SystemExit as exc:  # a client that lets its failed login's exit() through
            raise UserError(self._login_failed("the client's login check failed")) from exc
        self.api: Any = kaggle.api
        if not getattr(self.api, "_authenticated", True):
            self._login_again()
        # The account the client logged in as: a token's owner comes from Kaggle's answer, not from the environment.
        username = self.api.get_config_value("username") or self.credentials.username
        self.credentials = dataclasses.replace(self.credentials, username=username)
        log.debug("kaggle credentials from %s (user %s)", self.credentials.source, username)

    def _login_failed(self, why: str) -> str:
        return (f"Kaggle did not accept the credentials from {self.credentials.source} ({why}); check them or "
                f"create a new token at {TOKEN_URL}")  # fmt: skip

    def _login_again(self) -> None:
        """The client's login at import failed and was swallowed (kaggle 2.2.4 catches its own exit): log in once
        more, with our timeouts, and turn what fails into one line: rejected credentials, or no network."""
        import requests

        try:
            with _client_output(self.credentials):
                self.api.authenticate()
        except SystemExit as exc:  # the token was introspected and found inactive, and nothing else is configured
            raise UserError(self._login_failed("Kaggle rejected the token when the client checked it")) from exc
        except requests.HTTPError as exc:
            if _status_of(exc) == 401:
                raise UserError(self._login_failed("401 when the client checked the token")) from exc
            raise UserError(f"Kaggle answered {_status_of(exc)} when the client checked the credentials from "
                            f"{self.credentials.source}; try again later") from exc  # fmt: skip
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise UserError(
                f"could not reach Kaggle to check the credentials from {self.credentials.source} "
                f"({type(exc).__name__}, timeout {kaggle_retry.read_timeout():.0f} s); this is the network, not "
                "the credentials: check the connection or proxy settings and re-run"
            ) from exc

    @contextlib.contextmanager
    def errors(self, slug: str, action: str, kind: str = "competition") -> Iterator[None]:
        """Translate whatever the client raises while doing `action` on `kind` `slug` into one UserError.

        `kind` is what `slug` names: a competition, or (kaggle-push) a dataset or kernel ref `owner/slug`.
        """
        import requests  # dependencies of kaggle, already imported with it
        import urllib3.exceptions

        # What the client raises for network, HTTP, disk and size problems; anything else is a bug (exit 1).
        failures = (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)
        try:
            with _client_output(self.credentials):
                yield
        except failures as exc:
            message = " ".join(self.explain(exc, slug, action, kind).split())  # one line, whatever the server sent
            raise UserError(scrub(message, self.credentials)) from exc

    def explain(self, exc: Exception, slug: str, action: str, kind: str = "competition") -> str:
        import requests

        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        server = str(exc).strip() or type(exc).__name__
        who = f" as '{self.credentials.username}'" if self.credentials.username else ""
        if isinstance(exc, requests.HTTPError) and status in (403, 404) and kind != "competition":
            if status == 403:
                return (
                    f"Kaggle refused to {action} '{slug}'{who} (403: {server}); a {kind} can only be written by its "
                    "owner: rebuild the bundle for this account (make kaggle-bundle KAGGLE_USER=<your username>)"
                )
            return f"Kaggle has no {kind} '{slug}' (404: {server}); check its owner and slug"
        if isinstance(exc, requests.HTTPError) and status is not None:
            if status == 401:
                return (
                    f"Kaggle rejected the credentials from {self.credentials.source} (401: {server}); "
                    f"check them or create a new token at {TOKEN_URL}"
                )
            if status == 403:
                return f"Kaggle refused to {action} for '{slug}'{who} (403: {server}); {self.why_forbidden(slug)}"
            if status == 404:
                return f"Kaggle has no competition '{slug}' (404: {server}); {self.suggest(slug)}"
            if status == 429:
                wait = kaggle_retry.retry_after(exc)
                when = f"retry after {wait:.0f} s" if wait is not None else "wait a few minutes and re-run"
                return f"Kaggle is rate-limiting this account (429: {server}) while trying to {action}; {when}"
            return f"Kaggle answered {status} while trying to {action} for '{slug}' ({server}); try again later"
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)) or _is_protocol_error(exc):
            return (
                f"could not reach Kaggle to {action} for '{slug}' ({type(exc).__name__}); check the network or proxy "
                "settings and re-run (a download resumes where it stopped)"
            )
        if isinstance(exc, ValueError) and "size" in server:  # download_file's length check after a short read
            return f"the download of '{slug}' was cut short ({server}); re-run to fetch the rest"
        if isinstance(exc, OSError):
            return f"could not {action} for '{slug}': {exc.strerror or server} ({exc.filename or 'file'})"
        return f"the Kaggle client failed to {action} for '{slug}': {type(exc).__name__}: {server}"

    def why_forbidden(self, slug: str) -> str:
        """The likely cause of a 403 on a competition, from what Kaggle says about it (best effort)."""
        rules = f"accept the competition's rules at {RULES_URL.format(slug=slug)} with that account, then re-run"
        try:
            info = self.competition(slug)
        except UserError:
            info = None
        if info is None:
            return f"likely causes: rules not accepted ({rules}), the competition is closed, or its team-merger " \
                   "deadline has passed"  # fmt: skip
        now = datetime.now(UTC)
        if not getattr(info, "user_has_entered", True):
            return f"the rules are not accepted: {rules}"
        if getattr(info, "submissions_disabled", False) or _passed(getattr(info, "deadline", None), now):
            return f"the competition is closed (deadline {getattr(info, 'deadline', None)}); it takes no submissions"
        if _passed(getattr(info, "merger_deadline", None), now):
            return (f"the team-merger deadline ({info.merger_deadline}) has passed: a new team can no longer "
                    "join or submit")  # fmt: skip
        return f"likely causes: rules not accepted ({rules}), or a team restriction on the competition's page"

    def _read(self, slug: str, action: str, fn: Any, kind: str = "competition") -> Any:  # noqa: ANN401
        """A read (list, status, download): retried on transient failures, errors translated."""
        with self.errors(slug, action, kind):
            return kaggle_retry.call(fn, f"{action} ({slug})", read=True)

    def _write(self, slug: str, action: str, fn: Any, kind: str = "competition") -> Any:  # noqa: ANN401
        """A write (upload, submission, push): tried once, since a repeat could submit twice."""
        with self.errors(slug, action, kind):
            return kaggle_retry.call(fn, f"{action} ({slug})", read=False)

    def competition(self, slug: str) -> Any:  # noqa: ANN401
        """The competition's ApiCompetition (deadline, code-only, rules accepted...), or None when not listed."""
        found = self._read(slug, "look up the competition",
                           lambda: self.api.competitions_list(search=slug, category="all"))  # fmt: skip
        for item in getattr(found, "competitions", found) or []:
            if str(getattr(item, "ref", "")).rstrip("/").rsplit("/", 1)[-1] == slug:
                return item
        return None

    def suggest(self, slug: str) -> str:
        """Best effort: competitions whose slug contains the words of `slug`, to catch typos."""
        word = max(slug.replace("_", "-").split("-"), key=len)
        try:
            with _client_output(self.credentials):
                found = self.api.competitions_list(search=word, category="all") or []
            names = [c.ref.rstrip("/").rsplit("/", 1)[-1] for c in getattr(found, "competitions", found)]
        except Exception as exc:  # a hint is optional; the 404 is the message
            log.debug("competition search failed: %s", scrub(str(exc), self.credentials))
            names = []
        close = [name for name in names if name != slug][:5]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"{hint}use the slug from the competition's URL, https://www.kaggle.com/competitions/<slug>"

    # wrappers: one client call each, errors translated
    def download_files(self, slug: str, folder: Path, force: bool = False) -> Path:
        """Download the competition's zip into `folder`; a partial file there is resumed. Returns the zip's path."""
        folder.mkdir(parents=True, exist_ok=True)
        quiet = not sys.stderr.isatty()  # tqdm's bar helps at a terminal and clutters logs
        self._read(
            slug,
            "download the data",
            lambda: self.api.competition_download_files(slug, path=str(folder), force=force, quiet=quiet),
        )
        archive = folder / f"{slug}.zip"  # the client names it <slug>.<extension of the blob URL>
        if not archive.is_file():
            raise UserError(f"Kaggle sent no {archive.name} into {folder}; re-run, or download it from the website")
        return archive

    def submit(self, slug: str, file: Path, message: str) -> tuple[int, str]:
        """Upload `file` as a submission; (submission id, server message). UserError unless the server accepted it."""
        response = self._write(slug, "submit",
                               lambda: self.api.competition_submit(str(file), message, slug, quiet=True))  # fmt: skip
        text = scrub(str(getattr(response, "message", "") or ""), self.credentials)
        ref = int(getattr(response, "ref", 0) or 0)
        if text == UPLOAD_FAILED_MESSAGE:
            raise UserError(f"the upload of {file} to Kaggle failed ('{text}'); nothing was submitted, re-run submit")
        if not ref and "success" not in text.lower():
            raise UserError(f"Kaggle did not accept {file} for '{slug}': {text or 'empty answer'}")
        return ref, text

    def submissions(self, slug: str, page_size: int = 100, max_pages: int = 20) -> list[Any]:
        """Every submission of this account to `slug`, newest first (ApiSubmission objects), each once.

        Stops at a short page, and at a page that brings nothing new (a server repeating a page would loop).
        """
        found: dict[int, Any] = {}
        for page in range(1, max_pages + 1):
            batch = self._read(slug, "list submissions", lambda page=page: self.api.competition_submissions(
                slug, page_number=page, page_size=page_size)) or []  # fmt: skip
            new = [item for item in batch if item.ref not in found]
            found.update((item.ref, item) for item in new)
            if len(batch) < page_size or not new:
                break
        return list(found.values())

    def submission(self, slug: str, ref: int) -> Any:  # noqa: ANN401
        """Submission `ref` as Kaggle lists it now (status, scores, error_description), or None."""
        listing = lambda: self.api.competition_submissions(slug, page_number=1, page_size=50)  # noqa: E731
        batch = self._read(slug, "read the submission's status", listing) or []
        return next((item for item in batch if item.ref == ref), None)

    def submit_code(self, slug: str, kernel: str, version: int | None, file_name: str, message: str) -> int:
        """Submit `file_name` from version `version` of kernel `kernel` (code competitions); the submission's id."""
        answer = self._write(slug, "submit the kernel's output", lambda: self.api.competition_submit_code(
            file_name, message, slug, kernel=kernel, kernel_version=version, quiet=True))  # fmt: skip
        ref = int(getattr(answer, "ref", 0) or 0)
        if not ref:
            text = scrub(str(getattr(answer, "message", "") or "empty answer"), self.credentials)
            raise UserError(f"Kaggle did not accept {kernel}'s {file_name} for '{slug}': {text}")
        return ref

    def submission_limits(self, slug: str) -> Any:
        return self._read(slug, "read the submission limits", lambda: self.api.competition_get_submission_limits(slug))

    def data_files(self, slug: str) -> list[Any]:
        return list(self._read(slug, "list the data files", lambda: self.api.competition_list_files(slug)).files)

    # datasets and kernels (kaggle-push); `ref` is `owner/slug`
    def dataset_status(self, ref: str) -> str | None:
        """The dataset's processing status ('ready', 'blobs_received', ...), or None when it does not exist.

        Kaggle answers 403, not 404, for a dataset the caller cannot see, and a dataset that does not exist yet is
        one: on the caller's own slug a 403 means "not created yet" (the create call decides); on another
        account's, it stays a refusal.
        """
        import requests

        try:
            status = self._read(ref, "read the status of dataset", lambda: self.api.dataset_status(ref), kind="dataset")
            return str(status).lower()
        except UserError as exc:
            code = _status_of(exc.__cause__) if isinstance(exc.__cause__, requests.HTTPError) else None
            own = (self.credentials.username or "").lower() == ref.split("/", 1)[0].lower()
            if code == 404 or (code == 403 and own):
                log.debug("dataset %s: %s, taken as not created yet", ref, code)
                return None
            raise

    def dataset_version(self, ref: str) -> tuple[str, int]:
        """(status, current version number) of dataset `ref`: the number tells which version is ready."""
        text = self._read(ref, "read the version of dataset", lambda: self.api.dataset_status(ref, format="json"),
                          kind="dataset")  # fmt: skip
        values = json.loads(text)
        return str(values.get("status", "")).lower(), int(values.get("current_version_number") or 0)

    def kernel_status(self, ref: str) -> tuple[str, str]:
        """(status name in lower case: queued, running, complete, error, ...; failure message) of kernel `ref`."""
        answer = self._read(ref, "read the status of kernel", lambda: self.api.kernels_status(ref), kind="kernel")
        status = getattr(answer, "status", None)
        return (getattr(status, "name", str(status)).lower(), str(getattr(answer, "failure_message", "") or ""))

    def kernel_output(self, ref: str, folder: Path) -> list[Path]:
        """Download the latest run's output files and log of kernel `ref` into `folder`; their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        files, _ = self._read(ref, "download the output of kernel",
                              lambda: self.api.kernels_output(ref, str(folder), force=True, quiet=True),
                              kind="kernel")  # fmt: skip
        return [Path(f) for f in files]

    def gpu_quota(self) -> tuple[float, float] | None:
        """(hours used, hours allowed) of this week's GPU quota (`kaggle quota`), or None when Kaggle says nothing."""
        answer = self._read("gpu", "read the accelerator quota", lambda: self.api.quota_view(), kind="quota")
        quota = getattr(answer, "gpu_quota", None)
        used, total = getattr(quota, "time_used", None), getattr(quota, "total_time_allowed", None)
        if total is None:
            return None
        return (used.total_seconds() if used is not None else 0.0) / 3600, total.total_seconds() / 3600

    def create_dataset(self, ref: str, folder: Path, public: bool = False) -> str:
        """Upload every file in `folder` as the new dataset its dataset-metadata.json names; returns its URL."""
        quiet = not sys.stderr.isatty()
        answer = self._write(ref, "create dataset", lambda: self.api.dataset_create_new(
            str(folder), public=public, quiet=quiet, dir_mode="skip"), kind="dataset")  # fmt: skip
        return self._dataset_answer(ref, answer, "create dataset")

    def create_dataset_version(self, ref: str, folder: Path, notes: str) -> str:
        """Upload every file in `folder` as a new version of existing dataset `ref`; returns its URL."""
        quiet = not sys.stderr.isatty()
        answer = self._write(ref, "upload a new version of dataset", lambda: self.api.dataset_create_version(
            str(folder), notes, quiet=quiet, dir_mode="skip"), kind="dataset")  # fmt: skip
        return self._dataset_answer(ref, answer, "upload a new version of dataset")

    def _dataset_answer(self, ref: str, answer: Any, action: str) -> str:
        """kaggle 2.2.4 reports a refused dataset in the answer (status/error), not by raising: check it."""
        error = str(getattr(answer, "error", None) or "")
        status = str(getattr(answer, "status", None) or "")
        if error or (status and status.lower() != "ok"):
            tags = list(getattr(answer, "invalid_tags", None) or [])
            detail = scrub(error or status, self.credentials) + (f"; invalid tags {tags}" if tags else "")
            raise UserError(f"Kaggle did not {action} '{ref}': {detail}")
        return str(getattr(answer, "url", None) or f"https://www.kaggle.com/datasets/{ref}")

    def push_kernel(self, ref: str, folder: Path, timeout: int | None = None) -> Any:
        """Save a new version of the kernel in `folder` (kernel-metadata.json + its code file); Kaggle then runs it.
        `timeout`: the session's limit in seconds (RUNNER=kaggle), else Kaggle's default."""
        push = lambda: self.api.kernels_push(str(folder), timeout=str(timeout) if timeout else None)  # noqa: E731
        answer = self._write(ref, "push kernel", push, kind="kernel")
        problems = [str(getattr(answer, "error", None) or "")]
        for field_name in ("dataset", "competition", "kernel", "model"):
            invalid = list(getattr(answer, f"invalid_{field_name}_sources", None) or [])
            if invalid:
                rules = RULES_URL.format(slug=invalid[0])
                hint = f" (accept its rules at {rules})" if field_name == "competition" else ""
                problems.append(f"unknown or inaccessible {field_name} source(s) {invalid}{hint}")
        problems = [p for p in problems if p]
        if problems:
            raise UserError(f"Kaggle did not accept kernel '{ref}': {scrub('; '.join(problems), self.credentials)}")
        return answer


def _status_of(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _passed(when: Any, now: datetime) -> bool:  # noqa: ANN401 - a datetime, or None
    """`when` (a datetime the client parsed) is before `now`."""
    if not isinstance(when, datetime):
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) < now


def _is_protocol_error(exc: Exception) -> bool:
    import requests.exceptions
    import urllib3.exceptions

    broken = (
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.ReadTimeoutError,
    )
    return isinstance(exc, broken)
