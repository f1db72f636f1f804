"""Kaggle credentials as the official client (kaggle 2.2.x / kagglesdk) finds them, without importing it.

Why without: importing `kaggle` authenticates at once, and without credentials it prints a page of help text on
stdout. `check_credentials` follows the client's order (access token first, then username + key, then OAuth) and
validates kaggle.json only when it is the source the client will use. `scrub` hides every secret it found.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings/api"
CREDENTIAL_HELP = (
    "set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in $KAGGLE_CONFIG_DIR or ~/.kaggle "
    f"(create a token at {TOKEN_URL})"
)


@dataclass(frozen=True)
class Credentials:
    """Where the credentials come from; `secrets` only feeds `scrub` and never leaves this process."""

    source: str
    username: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)


def config_dir() -> Path:
    """The folder the client reads kaggle.json from (kaggle 2.2.4's own rule, mirrored so both agree)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _warn_if_readable(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("warning: %s is readable by other users; run `chmod 600 %s`", path, path)


def _read_kaggle_json(path: Path) -> tuple[str, str]:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot read it as JSON ({type(exc).__name__}); download a new one at {TOKEN_URL}"
        ) from exc
    if not isinstance(values, dict) or not values.get("username") or not values.get("key"):
        raise UserError(f'{path}: expected {{"username": "...", "key": "..."}}; download a new one at {TOKEN_URL}')
    return str(values["username"]), str(values["key"])


def _read_token(value: str) -> str:
    """KAGGLE_API_TOKEN holds the token, or (the client accepts both) the path of a file holding it."""
    with contextlib.suppress(OSError):
        if Path(value).is_file():
            return Path(value).read_text().strip()
    return value


def _token_file(path: str | None) -> str | None:
    """The token a file holds, or None (no path, no file, empty file): the client's own reading of token files."""
    with contextlib.suppress(OSError):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def token_source() -> tuple[str, str] | None:
    """(where, token) of the access token the client tries first, or None; the client's order (kagglesdk 0.1.x):

    inside a Kaggle notebook (KAGGLE_KERNEL_RUN_TYPE and KAGGLE_DATA_PROXY_URL set) the file KAGGLE_API_V1_TOKEN
    names, then KAGGLE_API_TOKEN (the token, or a file holding it), then ~/.kaggle/access_token(.txt).
    """
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") is not None and os.environ.get("KAGGLE_DATA_PROXY_URL") is not None:
        token = _token_file(os.environ.get("KAGGLE_API_V1_TOKEN"))
        if token:
            return "KAGGLE_API_V1_TOKEN", token
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN", _read_token(os.environ["KAGGLE_API_TOKEN"])
    for name in ("access_token", "access_token.txt"):
        token = _token_file(str(Path.home() / ".kaggle" / name))
        if token:
            return str(Path.home() / ".kaggle" / name), token
    return None


def check_credentials() -> Credentials:
    """Find Kaggle credentials the way the client will, without importing it; UserError listing the ways if none.

    The client's order: an access token (`token_source`), then username + key (KAGGLE_USERNAME/KAGGLE_KEY over
    kaggle.json), then `kaggle auth login`'s ~/.kaggle/credentials.json. kaggle.json is validated only when it is
    the source used: with a token it may lack a key, as the client does not read it then. A token's username is
    known only once the client has asked Kaggle about it (`Kaggle.username`).
    """
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    kaggle_json = config_dir() / "kaggle.json"
    token = token_source()
    if token:
        secrets = tuple(s for s in (key, _lenient_key(kaggle_json)) if s)
        return Credentials(token[0], None, (token[1], *secrets))
    file_user = file_key = None
    if kaggle_json.is_file():
        _warn_if_readable(kaggle_json)
        if not (user and key):  # the client ignores the file when the environment has both
            file_user, file_key = _read_kaggle_json(kaggle_json)
    secrets = tuple(s for s in (key, file_key) if s)
    source = "KAGGLE_USERNAME/KAGGLE_KEY" if user and key else str(kaggle_json)
    user, key = user or file_user, key or file_key
    if user and key:
        basic = base64.b64encode(f"{user}:{key}".encode()).decode()  # what an Authorization header carries
        return Credentials(source, user, (*secrets, basic))
    if (Path.home() / ".kaggle" / "credentials.json").is_file():  # `kaggle auth login` (OAuth)
        return Credentials(str(Path.home() / ".kaggle" / "credentials.json"))
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise UserError(f"{missing} is not set (the other one is); {CREDENTIAL_HELP}")
    raise UserError(f"no Kaggle credentials found: {CREDENTIAL_HELP}")


def _lenient_key(kaggle_json: Path) -> str | None:
    """kaggle.json's key when it has one (only so `scrub` hides it); nothing about the file is an error here."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(kaggle_json.read_text()).get("key") or "") or None
    return None


def scrub(text: str, credentials: Credentials | None) -> str:
    """`text` with every secret replaced, so nothing we print, log or raise can leak the key."""
    for secret in credentials.secrets if credentials else ():
        if secret:
            text = text.replace(secret, "***")
    return text
