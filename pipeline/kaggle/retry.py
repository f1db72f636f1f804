"""Timeouts and retries around the kaggle client's calls (kaggle 2.2.x sends every request without a timeout).

`install_timeouts` gives every request the client sends a (connect, read) timeout unless it set one itself, so a
stalled network ends in a clear error instead of a hung run. `call` runs one client call: reads (lists, status,
downloads) are retried with exponential backoff on 5xx, 429 and lost connections; writes (uploads, submissions,
pushes) are never retried, since a repeated one could submit twice. A 429's Retry-After is honoured up to
MAX_RETRY_AFTER seconds; beyond that, or for a write, the error says when to retry (`retry_after`).

Settings (environment): PIPELINE_KAGGLE_TIMEOUT (read timeout, seconds, default 60), PIPELINE_KAGGLE_RETRIES
(attempts for a read, default 4), PIPELINE_KAGGLE_BACKOFF (first backoff, seconds, default 2).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECT_TIMEOUT = 15.0
MAX_RETRY_AFTER = 120.0
_installed: dict[str, Any] = {}


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        log.warning("warning: %s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def read_timeout() -> float:
    return _number("PIPELINE_KAGGLE_TIMEOUT", 60.0)


def install_timeouts() -> None:
    """Every request sent without a timeout (all of the client's) gets (CONNECT_TIMEOUT, read_timeout())."""
    import requests

    if _installed.get("send") is not None:
        return
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # noqa: ANN401
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (min(CONNECT_TIMEOUT, read_timeout()), read_timeout())
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    _installed["send"] = original


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429 (or 503) answer asks us to wait (its Retry-After header, in seconds), or None."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:  # an HTTP date: rare from Kaggle; treat as "later"
        return None


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _transient(exc: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    status = _status(exc)
    if isinstance(exc, requests.HTTPError) and status is not None:
        return status == 429 or status >= 500
    network = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
               urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError)  # fmt: skip
    return isinstance(exc, network)


def call(fn: Callable[[], T], what: str, read: bool, sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`; a read is retried on transient failures (backoff, or Retry-After); a write is tried once."""
    attempts = max(int(_number("PIPELINE_KAGGLE_RETRIES", 4)), 1) if read else 1
    backoff = _number("PIPELINE_KAGGLE_BACKOFF", 2.0)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not _transient(exc):
                raise
            wait = retry_after(exc) if _status(exc) == 429 else None
            if wait is not None and wait > MAX_RETRY_AFTER:
                raise
            wait = wait if wait is not None else backoff * 2 ** (attempt - 1)
            log.warning("warning: %s failed (%s); retry %d of %d in %.0f s", what, _describe(exc), attempt,
                        attempts - 1, wait)  # fmt: skip
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    return f"HTTP {status}" if status is not None else type(exc).__name__
