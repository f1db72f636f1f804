"""Fixtures that run `python -m pipeline ...` in a subprocess whose real kaggle client talks to tests/fake_kaggle.

A subprocess because the client reads its environment (KAGGLE_API_ENVIRONMENT, config dir) when `kaggle` is
imported, and because it tests what users see: exit codes and the one-line `error:` contract on stderr.
Loaded with `pytest_plugins = ["helpers.kaggle_env"]` (tests/conftest.py belongs to the shared suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.fake_kaggle import FakeKaggle

REPO = Path(__file__).resolve().parents[2]

# `python -c RUNNER <stage> ...` runs the CLI like `python -m pipeline`, with one test-only change that leaves the
# client's code paths alone: its retry back-off returns at once. kaggle 2.2.4's download_file sleeps 2..32 s
# between its 5 retries (time.sleep in kaggle.api.kaggle_api_extended) and the upload's urllib3 Retry sleeps too;
# a sleep called from those modules is skipped, any other sleep is real.
RUNNER = r"""
import runpy, sys, time

_real_sleep = time.sleep

def _sleep(seconds):
    if sys._getframe(1).f_globals.get("__name__", "").startswith(("kaggle", "urllib3")):
        return
    _real_sleep(seconds)

time.sleep = _sleep
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""

# Never inherited from the developer's shell: real credentials, real proxies, Kernel markers, client verbosity.
_DROP_PREFIXES = ("KAGGLE_", "PIPELINE_")
_DROP = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "verbose", "verbose_output", "xdg_config_home"}


@dataclass
class Pipeline:
    """Runs the CLI in `root` against a fake Kaggle; `env` is the subprocess environment (edit it freely)."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def route_to(self, url: str) -> None:
        """Send the client's calls to `url`: http via the proxy variables, https (CONNECT) refused there too."""
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            self.env[name] = url

    def without_credentials(self) -> None:
        for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
            self.env.pop(name, None)

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", RUNNER, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def pipeline_env(root: Path, fake: FakeKaggle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES) and k.lower() not in _DROP}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(root / "kaggle-config"),
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",  # http://localhost/api/v1/..., read when `kaggle` is imported
            "KAGGLE_USERNAME": fake.username,
            "KAGGLE_KEY": fake.key,
            "KAGGLE_INPUT_ROOT": str(root / "kaggle" / "input"),  # absent unless a test makes it: not in a Kernel
            "KAGGLE_WORKING_ROOT": str(root / "kaggle" / "working"),
            "PIPELINE_ROOT": str(root),
            "PIPELINE_KAGGLE_POLL": "0.05",  # status polls and retry backoff: fast against the fake
            "PIPELINE_KAGGLE_BACKOFF": "0.01",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


@pytest.fixture
def fake_kaggle() -> Iterator[FakeKaggle]:
    with FakeKaggle() as fake:
        yield fake
    tunnels = [s.path for s in fake.seen if s.method == "CONNECT"]
    assert not tunnels, f"the client tried to leave the machine over https: {tunnels}"


@pytest.fixture
def pipeline(tmp_path: Path, fake_kaggle: FakeKaggle) -> Pipeline:
    runner = Pipeline(tmp_path, pipeline_env(tmp_path, fake_kaggle))
    runner.route_to(fake_kaggle.url)
    return runner


def pusher(root: Path, fake: FakeKaggle, tmp_path: Path) -> Pipeline:
    """The CLI in `root` against `fake`, as kaggle-push and kaggle-submit run there."""
    runner = Pipeline(root, pipeline_env(root, fake))
    runner.route_to(fake.url)
    runner.env["TMPDIR"] = str(tmp_path)  # the client keeps resumable-upload notes under $TMPDIR/.kaggle
    return runner
