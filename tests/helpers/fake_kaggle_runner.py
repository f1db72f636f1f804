"""A fake Kaggle whose pushed kernels really run: each new kernel version executes its script in a subprocess.

Extends tests/helpers/fake_kaggle.FakeKaggle (same API surface, same real client) for RUNNER=kaggle's round trip:

- SaveKernel starts the pushed script (`text`) in a session folder with its sources laid out as today's Kaggle
  mounts them: <input>/competitions/<slug> (the competition's files), <input>/datasets/<owner>/<slug> (the
  dataset's latest version), <input>/notebooks/<owner>/<slug> (a kernel source's latest complete output);
  KAGGLE_INPUT_ROOT / KAGGLE_WORKING_ROOT point there, and everything the script leaves in its working folder is
  that version's output. A run longer than `time_limit` (or the push's session timeout, if smaller) is killed and
  ends ERROR with TIMEOUT_MESSAGE, its working folder kept as output.
- At most `max_sessions` versions run at once; a push beyond that is refused with HTTP 400 and SESSION_LIMIT_MESSAGE.
- GetKernelSessionStatus answers RUNNING while the process lives, then COMPLETE (exit 0) or ERROR. `stale_polls`
  makes the first status calls after a push answer the previous version's final status (as Kaggle's can: the
  status carries no version). ListKernelSessionOutput returns the log so far while running.
- GetAcceleratorQuotaStatistics reports `gpu_used` of `gpu_total` hours.
- `fail_versions`: {kernel ref: {version numbers}} whose runs end ERROR at once (a notebook that errors);
  `delete(ref)` makes a kernel vanish (404).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from helpers.fake_kaggle import FakeKaggle, KernelRun, _error

TIMEOUT_MESSAGE = "Your notebook exceeded its maximum run time and was stopped"
SESSION_LIMIT_MESSAGE = "Too many sessions: this account already runs the maximum number of concurrent sessions"
KERNELS = "kernels.KernelsApiService"


class RunningKaggle(FakeKaggle):
    """FakeKaggle + kernels that run. `root`: where sessions and mounts are written; `python`: the interpreter that
    runs the scripts (a fresh virtualenv, so the bundle's wheels install apart from this one); `env`: their
    environment (KAGGLE_* paths are set per session)."""

    def __init__(self, root: Path, python: str = sys.executable, env: dict[str, str] | None = None,
                 time_limit: float = 300.0, max_sessions: int = 2, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.root = root
        self.python = python
        self.env = dict(env if env is not None else os.environ)
        self.time_limit = time_limit
        self.max_sessions = max_sessions
        self.stale_polls = 0
        self.gpu_used, self.gpu_total = 0.0, 30.0  # hours
        self.fail_versions: dict[str, set[int]] = {}
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.sessions: dict[tuple[str, int], Path] = {}
        self.finished: dict[tuple[str, int], str] = {}  # (ref, version) -> COMPLETE | ERROR
        self.failures: dict[tuple[str, int], str] = {}
        self.peak_sessions = 0
        self._stale: dict[str, int] = {}
        self._deleted: set[str] = set()
        self.hold: Path | None = None  # while this file exists, a started notebook stays "running" before its script

    # set-up and queries
    def running(self) -> int:
        return sum(1 for key, process in self.processes.items() if key not in self.finished)

    def delete(self, ref: str) -> None:
        self._deleted.add(ref)

    def wait_all(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        for process in list(self.processes.values()):
            if process.poll() is None:
                process.kill()
                process.wait()
        super().stop()

    # API
    def api(self, service: str, method: str, body: dict[str, Any], headers: dict[str, str],
            host: str) -> tuple[int, Any, dict]:  # fmt: skip
        if method == "GetAcceleratorQuotaStatistics" and self.authorised(headers):
            quota = {"timeUsed": f"{self.gpu_used * 3600:.0f}s", "totalTimeAllowed": f"{self.gpu_total * 3600:.0f}s"}
            return 200, {"gpuQuota": quota, "quotaRefreshTime": "2099-01-01T00:00:00Z"}, {}
        if service == KERNELS and method in ("GetKernelSessionStatus", "ListKernelSessionOutput"):
            ref = f"{body.get('userName', '')}/{body.get('kernelSlug', '')}"
            if ref in self._deleted:
                return _error(404, f"Kernel '{ref}' not found")
        return super().api(service, method, body, headers, host)

    def save_kernel(self, body: dict[str, Any]) -> tuple[int, Any, dict]:
        ref = body.get("slug", "")
        with self._lock:
            if ref.split("/")[0] == self.username and self.running() >= self.max_sessions:
                return _error(400, SESSION_LIMIT_MESSAGE)
            status, answer, headers = super().save_kernel(body)
            if status != 200 or answer.get("invalidDatasetSources") or answer.get("invalidCompetitionSources"):
                return status, answer, headers
            version = answer["versionNumber"]
            self._stale[ref] = self.stale_polls if version > 1 else 0
            run = self.runs[ref][-1]
            run.steps, run.output, run.log = ["RUNNING"], {}, "[]"
            self.start_session(ref, version, body)
            self.peak_sessions = max(self.peak_sessions, self.running())
        return status, answer, headers

    def api_kernel_session(self, method: str, body: dict[str, Any]) -> tuple[int, Any, dict]:
        ref = f"{body.get('userName', '')}/{body.get('kernelSlug', '')}"
        runs = self.runs.get(ref)
        if runs and method == "GetKernelSessionStatus" and self._stale.get(ref, 0) > 0 and len(runs) > 1:
            self._stale[ref] -= 1  # the previous version's final status, as if the new one were not started yet
            previous = runs[-2]
            return 200, {"status": previous.steps[0], "failureMessage": previous.failure}, {}
        if runs:
            self.refresh(ref, runs[-1])
        if runs and method == "ListKernelSessionOutput" and runs[-1].steps[0] == "RUNNING":
            return 200, {"files": [], "log": runs[-1].log, "nextPageToken": ""}, {}
        return super().api_kernel_session(method, body)

    # sessions
    def start_session(self, ref: str, version: int, body: dict[str, Any]) -> None:
        owner, slug = ref.split("/", 1)
        session = self.root / "sessions" / f"{owner}--{slug}--v{version}"
        shutil.rmtree(session, ignore_errors=True)
        inputs, working, tmp = session / "input", session / "working", session / "tmp"
        for folder in (inputs, working, tmp):
            folder.mkdir(parents=True)
        self.mount(inputs, body)
        script = session / "script.py"
        script.write_text(body.get("text", ""))
        env = {**self.env, "KAGGLE_INPUT_ROOT": str(inputs), "KAGGLE_WORKING_ROOT": str(working),
               "KAGGLE_KERNEL_RUN_TYPE": "Batch", "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}  # fmt: skip
        env.pop("PIPELINE_ROOT", None)
        limit = min(self.time_limit, float(body.get("sessionTimeoutSeconds") or self.time_limit))
        key = (ref, version)
        self.sessions[key] = session
        if version in self.fail_versions.get(ref, set()):
            command = [self.python, "-c", "import sys; print('error: this notebook was made to fail'); sys.exit(1)"]
        elif self.hold is not None:  # running, held at the start until the test removes the file
            command = [self.python, "-c", f"import os, runpy, sys, time\nwhile os.path.exists({str(self.hold)!r}): "
                       f"time.sleep(0.1)\nsys.argv = [{str(script)!r}]\nrunpy.run_path({str(script)!r}, "
                       "run_name='__main__')"]  # fmt: skip
        else:
            command = [self.python, str(script)]
        log = (session / "output.txt").open("w")
        self.processes[key] = subprocess.Popen(command, cwd=working, env=env, stdout=log, stderr=subprocess.STDOUT)
        threading.Thread(target=self.watch, args=(key, limit, log), daemon=True).start()

    def mount(self, inputs: Path, body: dict[str, Any]) -> None:
        """The sources where today's Kaggle mounts them."""
        for slug in body.get("competitionDataSources") or []:
            competition = self.competitions.get(slug)
            if competition is not None:
                write_files(inputs / "competitions" / slug, competition.files)
        for ref in body.get("datasetDataSources") or []:
            dataset = self.datasets.get(ref)
            if dataset is not None and dataset.versions:
                write_files(inputs / "datasets" / ref, dataset.versions[-1])
        for ref in body.get("kernelDataSources") or []:
            done = [r for r in self.runs.get(ref, []) if self.finished.get((ref, r.version)) == "COMPLETE"]
            if done:
                write_files(inputs / "notebooks" / ref, done[-1].output)

    def watch(self, key: tuple[str, int], limit: float, log: Any) -> None:  # noqa: ANN401
        process = self.processes[key]
        try:
            code = process.wait(timeout=limit)
            failure = "" if code == 0 else f"Your notebook hit an error (exit code {code})"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code, failure = -9, TIMEOUT_MESSAGE
        log.close()
        ref, version = key
        run = next(r for r in self.runs[ref] if r.version == version)
        with self._lock:
            self.refresh(ref, run)
            run.output = output_files(self.sessions[key] / "working")
            run.failure = failure
            run.steps = ["COMPLETE" if code == 0 else "ERROR"]
            self.failures[key] = failure
            self.finished[key] = run.steps[0]

    def refresh(self, ref: str, run: KernelRun) -> None:
        """The run's log so far, as Kaggle's JSON list of stream entries."""
        session = self.sessions.get((ref, run.version))
        if session is None or not (session / "output.txt").is_file():
            return
        lines = (session / "output.txt").read_text(errors="replace").splitlines(keepends=True)
        run.log = json.dumps(
            [{"stream_name": "stdout", "time": float(i), "data": line} for i, line in enumerate(lines)]
        )


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def output_files(working: Path) -> dict[str, bytes]:
    return {p.relative_to(working).as_posix(): p.read_bytes() for p in sorted(working.rglob("*")) if p.is_file()}
