"""A fake Kaggle API server on 127.0.0.1 that the real kaggle client (2.2.4 / kagglesdk 0.1.37) talks to in tests.

How the client is routed here without patching it: `KAGGLE_API_ENVIRONMENT=LOCALHOST` (read when `kaggle` is
imported) makes it call http://localhost/api/v1/<service>/<Method>, and `HTTP_PROXY=<this server's url>` makes
requests send those calls here as proxy-style requests (absolute URL on the request line), so any port works.
`HTTPS_PROXY` points here too and CONNECT is refused, so a call that would leave the machine fails on loopback.

Every API call is `POST /api/v1/<service>/<Method>` with camelCase JSON; errors are `{"code": N, "message": ...}`
with HTTP status N, which is what kagglesdk turns into requests.HTTPError. Blobs (competition zips, submission
uploads) are served by this server too, under /blobs/ and /uploads/. No pytest import: usable from any script.

Datasets and kernels (kaggle-push): StartBlobUpload hands out an upload URL per file (the file's name is only sent
here; CreateDataset/CreateDatasetVersion then list the upload tokens), and SaveKernel reports unknown dataset, model
or competition sources in its answer, as Kaggle does. As Kaggle does, a dataset or kernel the caller cannot see
answers 403, not 404, and that includes one that does not exist yet. A file named in `fail_uploads` has its upload
PUT refused: the client gives up on it (`_upload_blob` returns None), prints nothing when quiet, and creates the
version without it. ListDatasetFiles lists a version's files (name, totalBytes). GetKernelSessionStatus carries no
version: right after SaveKernel it still answers the previous run's status for `kernel_stale_polls` calls.
ListKernels gives a kernel's currentVersionNumber and lastRunTime (when its latest run started). Models
(CreateModel, CreateModelInstance, CreateModelInstanceVersion, GetModel, GetModelInstance,
ListModelInstanceVersionFiles; 403 for a model or instance not created yet; uploads skipped by `fail_uploads` as for
datasets; `mount_model` lays a version out as a Kernel mounts it), the accelerator quota
(GetAcceleratorQuotaStatistics), the public leaderboard (GetLeaderboard, `Competition.leaderboard`) and the kernel
log stream (GET /api/v1/kernels/logs/stream/<owner>/<slug>: the latest run's log as a JSON array) are served too.

Requests are matched by service and method (`competitions.CompetitionApiService`/`ListSubmissions`). What today's
Kaggle does that the pipeline waits on is simulated step by step, one step per status call: a submission is PENDING
for `Competition.pending_polls` listings, then COMPLETE with `public_score` or ERROR with `error_description`; a
pushed kernel version goes QUEUED -> RUNNING -> COMPLETE or ERROR (`kernel_outcome`), then serves its output file
and log; a new dataset version is reported by GetDataset only after `Dataset.version_lag` calls. `fail()` queues
error answers (429 with Retry-After, 5xx) or a stall for a service/method. `blob_host` (a second fake, on another
port) serves the blobs that downloads are redirected to, as Kaggle's storage host does.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

API = "/api/v1/"
COMPETITIONS = "competitions.CompetitionApiService"
OAUTH = "security.OAuthService"
# A fixed Last-Modified, so a second server instance serves "the same object" and the client may resume onto it.
LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)


def _page(body: dict[str, Any], rows: list[Any], key: str) -> dict[str, Any]:
    """One page of `rows` under `key`, by the request's pageSize and pageToken (the next start), as Kaggle pages."""
    size, start = int(body.get("pageSize") or 20), int(body.get("pageToken") or 0)
    more = start + size < len(rows)
    return {key: rows[start : start + size], "nextPageToken": str(start + size) if more else ""}


def make_zip(files: dict[str, bytes]) -> bytes:
    """The bytes of a zip holding `files` (name -> contents), as Kaggle's DownloadDataFiles blob would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class Competition:
    slug: str
    files: dict[str, bytes] = field(default_factory=dict)
    rules_accepted: bool = True
    blob: bytes | None = None  # what DownloadDataFiles serves; None: a valid zip of `files`
    submissions: list[dict[str, Any]] = field(default_factory=list)
    max_daily: int = 5
    max_total: int | None = None  # the competition's limit over all days (GetSubmissionLimits' limited_by_total)
    code_only: bool = False  # isKernelsSubmissionsOnly: only a kernel's output can be submitted
    submissions_disabled: bool = False
    deadline: str = "2099-01-01T00:00:00Z"
    merger_deadline: str = "2099-01-01T00:00:00Z"
    pending_polls: int = 1  # listings during which a new submission stays PENDING
    public_score: str = "0.875"
    error_description: str | None = None  # set: scoring ends in ERROR with this description
    evaluation_metric: str = "Categorization Accuracy"  # ListCompetitions' evaluationMetric (Kaggle's own name)
    repeat_pages: bool = False  # ListSubmissions ignores the page asked for (a server bug the client must survive)
    leaderboard: list[tuple[str, str]] = field(default_factory=list)  # (team name, public score), best first

    def zip_bytes(self) -> bytes:
        return self.blob if self.blob is not None else make_zip(self.files)


@dataclass
class Dataset:
    """A dataset as the fake holds it: `versions[i]` maps file name -> bytes of version i + 1."""

    ref: str
    title: str
    license: str
    is_private: bool
    versions: list[dict[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "READY"  # what GetDatasetStatus answers (kagglesdk's DatabundleVersionStatus name)
    version_lag: int = 0  # GetDataset calls after a new version before it reports that version's number
    reported: int = 0  # the version number GetDataset reports now
    lag_left: int = 0


@dataclass
class Fault:
    """An answer queued for the next `times` calls of `method` (of `service`, or any service)."""

    method: str
    status: int
    times: int = 1
    service: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0  # seconds to wait before answering (a stalled network)


@dataclass
class KernelRun:
    """One pushed kernel version's session: `steps` are the statuses it answers, one per status call."""

    version: int
    steps: list[str]
    failure: str = ""
    output: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    stale: int = 0  # status calls that still answer the previous run's last status
    started: str = ""  # ISO time the run left the queue's stale answers (ListKernels' lastRunTime)


@dataclass
class Model:
    """A Kaggle Model as the fake holds it: its instances' versions, each a dict file name -> bytes."""

    ref: str  # owner/slug
    instances: dict[str, list[dict[str, bytes]]] = field(default_factory=dict)  # "<framework>/<slug>" -> versions


@dataclass
class Seen:
    """One request as the server received it (headers lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class FakeKaggle:
    """A threaded fake of Kaggle's competition API. Use as a context manager; `url` is the proxy URL to set."""

    def __init__(self, username: str = "fake-user", key: str = "fake-key-0123456789", token: str | None = None) -> None:
        self.username = username
        self.key = key
        self.token = token  # a KAGGLE_API_TOKEN the server accepts (Bearer), via IntrospectToken
        self.competitions: dict[str, Competition] = {}
        self.seen: list[Seen] = []
        self.uploads: dict[str, bytes] = {}
        self.blob_names: dict[str, str] = {}  # StartBlobUpload's token -> the file name it announced
        self.datasets: dict[str, Dataset] = {}  # "owner/slug" -> Dataset
        self.kernels: dict[str, list[dict[str, Any]]] = {}  # "owner/slug" -> every SaveKernel body, oldest first
        self.runs: dict[str, list[KernelRun]] = {}  # "owner/slug" -> its versions' sessions
        self.kernel_outcome = "COMPLETE"  # how the next pushed version's run ends: COMPLETE or ERROR
        self.kernel_output = b"id,label\nc,dog\nd,cat\n"  # the submission.csv a completed run leaves
        self.kernel_output_name = "submission.csv"  # the name a completed run gives it
        self.faults: list[Fault] = []
        self.dataset_version_lag = 0  # GetDataset calls before a new dataset version's number shows
        self.blob_host: FakeKaggle | None = None  # when set, blob downloads are redirected to it
        self.upload_status = 200  # what the PUT to createUrl answers; not 200/201 makes the client's upload fail
        self.fail_uploads: set[str] = set()  # file names whose upload PUT is refused (400): the client skips them
        self.kernel_stale_polls = 0  # status calls after SaveKernel that still answer the previous run's status
        self.models: dict[str, Model] = {}  # "owner/slug" -> Model
        self.gpu_quota_hours = (0.0, 30.0)  # GetAcceleratorQuotaStatistics: (used, allowed) this week
        self.die_after_bytes: int | None = None  # blob GET: send this many body bytes, then the server dies
        self.dead = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # set-up
    def add_competition(self, slug: str, files: dict[str, bytes] | None = None, **kwargs: Any) -> Competition:
        competition = Competition(slug, dict(files or {}), **kwargs)
        self.competitions[slug] = competition
        return competition

    def fail(self, method: str, status: int, times: int = 1, service: str | None = None,
             retry_after: float | None = None, stall: float = 0.0) -> Fault:  # fmt: skip
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        fault = Fault(method, status, times, service, headers, stall)
        self.faults.append(fault)
        return fault

    def add_blob_host(self) -> FakeKaggle:
        """A second fake on another port that serves this one's blobs; downloads are redirected there.

        The client reaches it through this fake, its HTTP proxy, which relays those requests (`_relay`)."""
        other = FakeKaggle(self.username, self.key, self.token)
        other.competitions, other.runs = self.competitions, self.runs
        self.blob_host = other.start()
        return other

    def _fault(self, service: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and fault.service in (None, service) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    # lifecycle
    def start(self) -> FakeKaggle:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.blob_host is not None:
            self.blob_host.stop()
            self.blob_host = None
        self.dead = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def die(self) -> None:
        """Stop listening, from any thread: later connections are refused, as when a server goes away."""
        self.dead = True
        threading.Thread(target=self.stop, daemon=True).start()

    def __enter__(self) -> FakeKaggle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # queries for tests
    def calls(self, method: str | None = None) -> list[Seen]:
        """API calls received (optionally only `method`, e.g. "CreateSubmission"), in order."""
        with self._lock:
            api = [s for s in self.seen if s.path.startswith(API)]
        return [s for s in api if method is None or s.path.rsplit("/", 1)[-1] == method]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    # request handling (called from the handler thread)
    def authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == self.username and key == self.key
        if auth.startswith("Bearer "):
            return self.token is not None and auth[7:] == self.token
        return False

    def api(self, service: str, method: str, body: dict[str, Any], headers: dict[str, str],
            host: str) -> tuple[int, Any, dict]:  # fmt: skip
        """Answer one API call: (status, JSON payload, extra headers)."""
        fault = self._fault(service, method)
        if fault is not None:
            time.sleep(fault.stall)
            if fault.status:
                return fault.status, {"code": fault.status, "message": f"fake fault {fault.status}"}, fault.headers
        if method == "IntrospectToken":  # the client asks before it trusts a KAGGLE_API_TOKEN
            active = self.token is not None and body.get("token") == self.token
            return 200, {"active": active, "username": self.username if active else ""}, {}
        if not self.authorised(headers):
            return _error(401, "Unauthenticated: the API key or token is not valid")
        if method == "ListCompetitions":
            search = body.get("search", "")
            found = [
                {
                    "ref": f"https://www.kaggle.com/competitions/{slug}",
                    "title": slug,
                    "userHasEntered": c.rules_accepted,
                    "isKernelsSubmissionsOnly": c.code_only,
                    "submissionsDisabled": c.submissions_disabled,
                    "deadline": c.deadline,
                    "mergerDeadline": c.merger_deadline,
                    "maxDailySubmissions": c.max_daily,
                    "evaluationMetric": c.evaluation_metric,
                }
                for slug, c in self.competitions.items()
                if search in slug
            ]
            return 200, {"competitions": found, "nextPageToken": ""}, {}
        if service == "kernels.KernelsApiService" and method in ("GetKernelSessionStatus", "ListKernelSessionOutput"):
            return self.api_kernel_session(method, body)
        if method == "ListKernels":
            return self.list_kernels(body)
        if method == "GetAcceleratorQuotaStatistics":
            used, allowed = self.gpu_quota_hours
            quota = {"timeUsed": f"{used * 3600:.0f}s", "totalTimeAllowed": f"{allowed * 3600:.0f}s"}
            return 200, {"quotaRefreshTime": "2099-01-05T00:00:00Z", "gpuQuota": quota}, {}
        if service == "models.ModelApiService":
            return self.api_models(method, body, host)
        if method in ("StartBlobUpload", "GetDatasetStatus", "CreateDataset", "CreateDatasetVersion", "SaveKernel",
                      "GetDataset", "ListDatasetFiles"):  # fmt: skip
            return self.api_datasets_kernels(method, body, host)
        slug = body.get("competitionName", "")
        competition = self.competitions.get(slug)
        if competition is None:
            return _error(404, f"Competition '{slug}' not found")
        if method in ("DownloadDataFiles", "DownloadDataFile", "StartSubmissionUpload", "CreateSubmission"):
            if not competition.rules_accepted:
                return _error(403, "You must accept this competition's rules before you can use it")
        if method == "ListDataFiles":
            files = [
                {"name": n, "totalBytes": len(d), "creationDate": "2024-01-01T00:00:00.000Z"}
                for n, d in competition.files.items()
            ]
            return 200, {"files": files, "nextPageToken": ""}, {}
        if method == "DownloadDataFiles":
            blobs = f"127.0.0.1:{self.blob_host.port}" if self.blob_host is not None else host
            return 302, None, {"Location": f"http://{blobs}/blobs/{slug}.zip"}
        if method == "DownloadDataFile":
            return 302, None, {"Location": f"http://{host}/blobs/{slug}/files/{body.get('fileName', '')}"}
        if method == "StartSubmissionUpload":
            token = f"upload-{len(self.uploads) + 1}"
            self.uploads[token] = b""
            return 200, {"token": token, "createUrl": f"http://{host}/uploads/{token}"}, {}
        if method == "CreateSubmission":
            token = body.get("blobFileTokens", "")
            if token not in self.uploads:
                return _error(400, f"Unknown blob token '{token}'")
            if competition.code_only:
                return _error(400, "This competition only accepts submissions from notebooks")
            ref = self.add_submission(competition, body.get("submissionDescription", ""), self.uploads[token])
            return 200, {"message": f"Successfully submitted to {slug}", "ref": ref}, {}
        if method == "CreateCodeSubmission":
            return self.create_code_submission(competition, body)
        if method == "ListSubmissions":
            size = int(body.get("pageSize") or 20)
            page = 1 if competition.repeat_pages else int(body.get("page") or 1)
            self.score_pending(competition)
            chunk = competition.submissions[(page - 1) * size : page * size]
            shown = [{k: v for k, v in item.items() if not k.startswith("_")} for item in chunk]
            return 200, {"submissions": shown, "nextPageToken": ""}, {}
        if method == "GetLeaderboard":
            rows = [{"teamId": i + 1, "teamName": name, "submissionDate": "2024-01-02T03:04:05Z", "score": score}
                    for i, (name, score) in enumerate(competition.leaderboard)]  # fmt: skip
            return 200, _page(body, rows, "submissions"), {}
        if method == "GetSubmissionLimits":
            used = len(competition.submissions)
            left = max(competition.max_daily - used, 0)
            by_total = competition.max_total is not None and competition.max_total - used < left
            if by_total:
                left = max(competition.max_total - used, 0)
            answer = {"numToday": used, "numTotal": used, "numAllowedNow": left, "limitedByTotal": by_total}
            return 200, answer, {}
        return _error(404, f"fake Kaggle does not implement {method}")

    def add_submission(self, competition: Competition, description: str, data: bytes, **extra: Any) -> int:
        ref = 1000 + sum(len(c.submissions) for c in self.competitions.values()) + 1
        competition.submissions.insert(0, {  # newest first, as Kaggle lists them
            "ref": ref, "date": "2024-01-02T03:04:05.000Z", "description": description, "fileName": "submission.csv",
            "status": "PENDING", "totalBytes": len(data), "_polls": competition.pending_polls, **extra,
        })  # fmt: skip
        return ref

    def score_pending(self, competition: Competition) -> None:
        """One listing's worth of scoring: each PENDING submission gets closer to COMPLETE (or ERROR)."""
        for item in competition.submissions:
            if item["status"] != "PENDING":
                continue
            item["_polls"] -= 1
            if item["_polls"] < 0:
                if competition.error_description:
                    item.update(status="ERROR", errorDescription=competition.error_description)
                else:
                    item.update(status="COMPLETE", publicScore=competition.public_score, privateScore="")

    def create_code_submission(self, competition: Competition, body: dict[str, Any]) -> tuple[int, Any, dict]:
        ref = f"{body.get('kernelOwner', '')}/{body.get('kernelSlug', '')}"
        runs = self.runs.get(ref, [])
        version = int(body.get("kernelVersion") or (runs[-1].version if runs else 0))
        run = next((r for r in runs if r.version == version), None)
        if run is None:
            return _error(404, f"Kernel '{ref}' version {version} not found")
        if run.steps[0] != "COMPLETE" or body.get("fileName") not in run.output:
            return _error(400, f"Kernel '{ref}' version {version} has no output '{body.get('fileName')}'")
        data = run.output[body["fileName"]]
        number = self.add_submission(competition, body.get("submissionDescription", ""), data,
                                     _kernel=ref, _version=version)  # fmt: skip
        return 200, {"message": "Your submission was successfully saved", "ref": number}, {}

    def api_kernel_session(self, method: str, body: dict[str, Any]) -> tuple[int, Any, dict]:
        ref = f"{body.get('userName', '')}/{body.get('kernelSlug', '')}"
        runs = self.runs.get(ref)
        if not runs:
            return _error(403, f"Permission 'kernels.get' was denied for '{ref}'")
        run = runs[-1]  # the latest version's session, as the client asks without a version
        if method == "GetKernelSessionStatus":
            if run.stale > 0 and len(runs) > 1:  # Kaggle still answers the previous run's last status
                run.stale -= 1
                previous = runs[-2]
                return 200, {"status": previous.steps[0], "failureMessage": previous.failure}, {}
            run.started = run.started or _now()
            status = run.steps[0]
            if len(run.steps) > 1:
                run.steps.pop(0)
            return 200, {"status": status, "failureMessage": run.failure if status == "ERROR" else ""}, {}
        host = f"127.0.0.1:{self.blob_host.port}" if self.blob_host is not None else f"127.0.0.1:{self.port}"
        files = [{"fileName": name, "url": f"http://{host}/blobs/kernels/{ref}/{run.version}/{name}"}
                 for name in run.output] if run.steps[0] == "COMPLETE" else []  # fmt: skip
        return 200, {"files": files, "log": run.log, "nextPageToken": ""}, {}

    def list_kernels(self, body: dict[str, Any]) -> tuple[int, Any, dict]:
        """ListKernels: the caller's kernels matching `search`, with their current version and last run's start."""
        kernels = []
        for ref, saved in self.kernels.items():
            if body.get("search", "") not in ref or (body.get("user") and not ref.startswith(f"{body['user']}/")):
                continue
            started = [r.started for r in self.runs.get(ref, []) if r.started]
            kernels.append(
                {
                    "ref": ref,
                    "title": saved[-1].get("newTitle", ""),
                    "slug": ref.split("/")[1],
                    "currentVersionNumber": len(saved),
                    **({"lastRunTime": started[-1]} if started else {}),
                }
            )
        return 200, {"kernels": kernels, "nextPageToken": ""}, {}

    def stream_log(self, path: str) -> bytes | None:
        """GET /api/v1/kernels/logs/stream/<owner>/<slug>: the latest run's log, a JSON list (a finished session)."""
        ref = path.rsplit("/", 2)
        runs = self.runs.get(f"{ref[-2]}/{ref[-1]}")
        if not runs:
            return None
        run = runs[-1]
        while len(run.steps) > 1:  # the stream ends when the session does
            run.started = run.started or _now()
            run.stale = 0
            run.steps.pop(0)
        return run.log.encode()

    def api_models(self, method: str, body: dict[str, Any], host: str) -> tuple[int, Any, dict]:
        """Kaggle Models: create a model, an instance (its first version), further versions; look them up."""
        ref = f"{body.get('ownerSlug', '')}/{body.get('modelSlug') or body.get('slug') or ''}"
        model = self.models.get(ref)
        if method in ("GetModel", "GetModelInstance", "ListModelInstanceVersionFiles"):
            # Kaggle answers 403, not 404, for what the caller cannot see, a model not created yet included
            if model is None:
                return _error(403, f"Permission 'models.get' was denied for '{ref}'")
            if method == "GetModel":
                return 200, {"ref": ref, "title": ref.split("/")[1]}, {}
            instance = f"{_framework(body.get('framework', ''))}/{body.get('instanceSlug', '')}"
            if instance not in model.instances:
                return _error(403, f"Permission 'models.get' was denied for '{ref}/{instance}'")
            versions = model.instances[instance]
            if method == "GetModelInstance":
                return 200, {"slug": body.get("instanceSlug"), "framework": body.get("framework"),
                             "versionNumber": len(versions)}, {}  # fmt: skip
            return self.model_files(versions, body)
        if body.get("ownerSlug") != self.username:
            return _error(403, f"'{self.username}' may not write models of '{body.get('ownerSlug')}'")
        if method == "CreateModel":
            if model is not None:
                return 200, {"error": f"Model {ref} already exists"}, {}
            self.models[ref] = Model(ref)
            return 200, {"ref": ref, "url": f"https://www.kaggle.com/models/{ref}"}, {}
        if model is None:
            return _error(403, f"Permission 'models.get' was denied for '{ref}'")
        instance_body = body.get("instance") or body.get("body") or {}
        files = {}
        for entry in instance_body.get("files") or []:
            token = entry.get("token", "")
            if token not in self.blob_names:
                return _error(400, f"Unknown blob token '{token}'")
            files[self.blob_names[token]] = self.uploads[token]
        slug = instance_body.get("instanceSlug") or body.get("instanceSlug") or ""
        instance = f"{_framework(instance_body.get('framework') or body.get('framework') or '')}/{slug}"
        if method == "CreateModelInstance":
            if instance in model.instances:
                return 200, {"error": f"Instance {instance} already exists"}, {}
            model.instances[instance] = [files]
        else:  # CreateModelInstanceVersion
            if instance not in model.instances:
                return _error(403, f"Permission 'models.get' was denied for '{ref}/{instance}'")
            model.instances[instance].append(files)
        number = len(model.instances[instance])
        return 200, {"ref": f"{ref}/{instance}/{number}", "url": f"https://www.kaggle.com/models/{ref}"}, {}

    def model_files(self, versions: list[dict[str, bytes]], body: dict[str, Any]) -> tuple[int, Any, dict]:
        """ListModelInstanceVersionFiles: one version's files (name, size), paged."""
        number = int(body.get("versionNumber") or len(versions))
        if not 1 <= number <= len(versions):
            return _error(403, f"Permission 'models.get' was denied for version {number}")
        files = [{"name": name, "size": len(data), "creationDate": "2024-01-01T00:00:00Z"}
                 for name, data in sorted(versions[number - 1].items())]  # fmt: skip
        size, start = int(body.get("pageSize") or 20), int(body.get("pageToken") or 0)
        more = start + size < len(files)
        return 200, {"files": files[start : start + size], "nextPageToken": str(start + size) if more else ""}, {}

    def mount_model(self, source: str, input_root: Path) -> Path:
        """Lay version `owner/slug/framework/instance/N` out under `input_root` as a Kernel mounts a model source:
        <input>/<slug>/<framework, lower case>/<instance>/<N>/ (read-only files)."""
        owner, slug, framework, instance, number = source.split("/")
        files = self.models[f"{owner}/{slug}"].instances[f"{_framework(framework)}/{instance}"][int(number) - 1]
        return _lay_out(input_root / slug / framework.lower() / instance / number, files)

    def mount_dataset(self, source: str, input_root: Path) -> Path:
        """Lay version `owner/slug/N` out as a Kernel mounts a dataset source: <input>/datasets/<owner>/<slug>/."""
        owner, slug, number = source.split("/")
        files = self.datasets[f"{owner}/{slug}"].versions[int(number) - 1]
        return _lay_out(input_root / "datasets" / owner / slug, files)

    def api_datasets_kernels(self, method: str, body: dict[str, Any], host: str) -> tuple[int, Any, dict]:
        """kaggle-push's calls: blob uploads, dataset create/version/status, kernel save."""
        if method == "StartBlobUpload":
            token = f"blob-{len(self.uploads) + 1}"
            self.uploads[token] = b""
            self.blob_names[token] = body.get("name", "")
            return 200, {"token": token, "createUrl": f"http://{host}/uploads/{token}"}, {}
        if method == "SaveKernel":
            return self.save_kernel(body)
        ref = f"{body.get('ownerSlug', '')}/{body.get('datasetSlug') or body.get('slug') or ''}"
        dataset = self.datasets.get(ref)
        if method in ("GetDatasetStatus", "GetDataset", "ListDatasetFiles") and dataset is None:
            # Kaggle answers 403, not 404, for a dataset the caller cannot see, one that does not exist included
            return _error(403, f"Permission 'datasets.get' was denied for '{ref}'")
        if method == "GetDatasetStatus":
            return 200, {"status": dataset.status}, {}
        if method == "ListDatasetFiles":
            number = int(body.get("datasetVersionNumber") or len(dataset.versions))
            if not 1 <= number <= len(dataset.versions):
                return _error(403, f"Permission 'datasets.get' was denied for '{ref}/{number}'")
            files = [{"name": name, "totalBytes": len(data), "creationDate": "2024-01-01T00:00:00Z"}
                     for name, data in sorted(dataset.versions[number - 1].items())]  # fmt: skip
            return 200, _page(body, files, "datasetFiles"), {}
        if method == "GetDataset":
            if dataset.lag_left > 0:
                dataset.lag_left -= 1
            else:
                dataset.reported = len(dataset.versions)
            return 200, {"ref": ref, "currentVersionNumber": dataset.reported}, {}
        if body.get("ownerSlug") != self.username:
            return _error(403, f"'{self.username}' may not write datasets of '{body.get('ownerSlug')}'")
        new_files = body.get("files") if method == "CreateDataset" else (body.get("body") or {}).get("files")
        files = {}
        for entry in new_files or []:
            token = entry.get("token", "")
            if token not in self.blob_names:
                return _error(400, f"Unknown blob token '{token}'")
            files[self.blob_names[token]] = self.uploads[token]
        if method == "CreateDataset":
            if dataset is not None:
                return 200, {"status": "error", "error": f"The dataset {ref} already exists"}, {}
            self.datasets[ref] = Dataset(ref, body.get("title", ""), body.get("licenseName", ""),
                                         bool(body.get("isPrivate")), [files], [""])  # fmt: skip
            self.datasets[ref].version_lag = self.dataset_version_lag
            self.datasets[ref].lag_left = self.dataset_version_lag
        else:  # CreateDatasetVersion
            if dataset is None:
                return _error(403, f"Permission 'datasets.get' was denied for '{ref}'")
            dataset.versions.append(files)
            dataset.notes.append((body.get("body") or {}).get("versionNotes", ""))
            dataset.lag_left = dataset.version_lag
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"}, {}

    def save_kernel(self, body: dict[str, Any]) -> tuple[int, Any, dict]:
        ref = body.get("slug", "")
        if ref.split("/")[0] != self.username:
            return _error(403, f"'{self.username}' may not write kernels of '{ref.split('/')[0]}'")
        self.kernels.setdefault(ref, []).append(body)
        version = len(self.kernels[ref])
        ok = self.kernel_outcome == "COMPLETE"
        self.runs.setdefault(ref, []).append(KernelRun(
            version, ["QUEUED", "RUNNING", self.kernel_outcome], "" if ok else "Your notebook hit an error",
            {self.kernel_output_name: self.kernel_output} if ok else {},
            json.dumps([{"stream_name": "stderr", "time": 1.0, "data": f"log line {i}\n"} for i in range(30)]
                       + ([] if ok else [{"stream_name": "stderr", "time": 2.0, "data": "error: boom\n"}])),
            stale=self.kernel_stale_polls,
        ))  # fmt: skip
        datasets, competitions = body.get("datasetDataSources", []), body.get("competitionDataSources", [])
        answer = {
            "ref": f"/code/{ref}",
            "url": f"https://www.kaggle.com/code/{ref}",
            "versionNumber": len(self.kernels[ref]),
            "invalidDatasetSources": [d for d in datasets if not self.has_dataset(d)],
            "invalidCompetitionSources": [c for c in competitions if c not in self.competitions],
            "invalidModelSources": [m for m in body.get("modelDataSources", []) if not self.has_model_version(m)],
        }
        return 200, answer, {}

    def has_dataset(self, source: str) -> bool:
        """`owner/slug` or a pinned `owner/slug/N` names a dataset (version) that exists."""
        owner, slug, *version = source.split("/")
        dataset = self.datasets.get(f"{owner}/{slug}")
        return dataset is not None and (not version or 1 <= int(version[0]) <= len(dataset.versions))

    def has_model_version(self, source: str) -> bool:
        """`owner/model/framework/instance/N` names an existing version of a Model instance."""
        owner, slug, framework, instance, number = source.split("/")
        model = self.models.get(f"{owner}/{slug}")
        versions = model.instances.get(f"{_framework(framework)}/{instance}", []) if model is not None else []
        return 1 <= int(number) <= len(versions)

    def blob(self, path: str) -> bytes | None:
        """The bytes at a /blobs/ path, or None."""
        rest = path[len("/blobs/") :]
        if rest.startswith("kernels/"):  # kernels/<owner>/<slug>/<version>/<file>
            owner, slug, version, name = rest.split("/", 4)[1:]
            runs = self.runs.get(f"{owner}/{slug}", [])
            run = next((r for r in runs if str(r.version) == version), None)
            return run.output.get(name) if run is not None else None
        if rest.endswith(".zip") and rest[:-4] in self.competitions:
            return self.competitions[rest[:-4]].zip_bytes()
        slug, _, name = rest.partition("/files/")
        competition = self.competitions.get(slug)
        if competition is not None and name in competition.files:
            return competition.files[name]
        return None


def _framework(name: str) -> str:
    """One spelling of a model framework: the client sends MODEL_FRAMEWORK_PY_TORCH, model_sources say pyTorch or
    PyTorch, a Kernel mounts it as pytorch."""
    return name.lower().removeprefix("model_framework_").replace("_", "")


def _lay_out(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o444)
    return folder


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def _error(code: int, message: str) -> tuple[int, Any, dict]:
    return code, {"code": code, "message": message}, {}


def _handler_for(fake: FakeKaggle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _target(self) -> tuple[str, str]:
            """(host, path) from a proxy-style absolute URL or a plain path."""
            parts = urlsplit(self.path)
            host = parts.netloc or self.headers.get("Host", "localhost")
            return host, parts.path

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _gone(self) -> bool:
            if fake.dead:  # accepted in the moment before the socket closed: behave like a dead server
                self.close_connection = True
                self.connection.close()
                return True
            return False

        def _seen(self, body: bytes) -> Seen:
            _, path = self._target()
            seen = Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
            fake.record(seen)
            return seen

        def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
            fake.record(Seen("CONNECT", self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
            self.close_connection = True
            self._send(403, b"fake Kaggle refuses CONNECT: nothing may leave this machine")

        def do_POST(self) -> None:  # noqa: N802
            if self._gone():
                return
            body = self._read_body()
            seen = self._seen(body)
            host, path = self._target()
            if not path.startswith(API):
                self._send(404, b"not found")
                return
            service, _, method = path[len(API) :].rpartition("/")
            try:
                payload = seen.json()
            except ValueError:
                status, answer, extra = _error(400, "request body is not JSON")
            else:
                status, answer, extra = fake.api(service, method, payload, seen.headers, host)
            if answer is None:
                self._send(status, b"", extra)
            else:
                self._send(status, json.dumps(answer).encode(), {"Content-Type": "application/json", **extra})

        def _relay(self, host: str, path: str) -> None:
            """As the client's HTTP proxy: pass a GET for another host (the blob host) on, answer with its reply."""
            import http.client

            name, _, port = host.partition(":")
            connection = http.client.HTTPConnection(name, int(port or 80), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range", "authorization")}
            connection.request("GET", path, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
            keep = ("content-type", "content-range", "last-modified", "accept-ranges")
            self._send(reply.status, body, {k: v for k, v in reply.getheaders() if k.lower() in keep})
            connection.close()

        def do_GET(self) -> None:  # noqa: N802
            if self._gone():
                return
            host, path = self._target()
            if fake.blob_host is not None and host == f"127.0.0.1:{fake.blob_host.port}":
                self._relay(host, path)  # not recorded here: the blob host records it
                return
            seen = self._seen(b"")
            if path.startswith(API + "kernels/logs/stream/"):
                if not fake.authorised(seen.headers):
                    self._send(401, b'{"code": 401, "message": "Unauthenticated"}')
                    return
                log = fake.stream_log(path)
                if log is None:
                    self._send(403, b'{"code": 403, "message": "Permission \'kernels.get\' was denied"}')
                    return
                self._send(200, log, {"Content-Type": "application/json"})
                return
            data = fake.blob(path) if path.startswith("/blobs/") else None
            if data is None:
                self._send(404, b"no such blob")
                return
            headers = {"Content-Type": "application/zip", "Last-Modified": LAST_MODIFIED, "Accept-Ranges": "bytes"}
            start = 0
            wanted = seen.headers.get("range", "")
            if wanted.startswith("bytes=") and seen.headers.get("if-range", LAST_MODIFIED) == LAST_MODIFIED:
                start = int(wanted[6:].split("-")[0])
                if start >= len(data):
                    self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
            body = data[start:]
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if fake.die_after_bytes is None:
                self._send(status, body, headers)
                return
            # Promise the whole body, deliver part of it, then go away: a server dying mid-transfer.
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: fake.die_after_bytes])
            self.wfile.flush()
            self.close_connection = True
            fake.die()

        def do_PUT(self) -> None:  # noqa: N802
            if self._gone():
                return
            body = self._read_body()
            self._seen(body)
            _, path = self._target()
            token = path.rsplit("/", 1)[-1]
            if not path.startswith("/uploads/") or token not in fake.uploads:
                self._send(404, b"no such upload")
                return
            if fake.blob_names.get(token) in fake.fail_uploads:
                self._send(400, b"upload refused")  # not resumable: the client gives up on this file
                return
            wanted = self.headers.get("Content-Range", "")
            if wanted.startswith("bytes */"):  # the client asks how much of a resumed upload arrived
                size = int(wanted[len("bytes */") :])
                done = size > 0 and len(fake.uploads[token]) == size
                self._send(200 if done else 308, b"")
                return
            if fake.upload_status in (200, 201):
                fake.uploads[token] = body
            self._send(fake.upload_status, b"")

    return Handler
