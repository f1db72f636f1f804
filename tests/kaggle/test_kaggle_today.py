"""Kaggle as it is today: both mount layouts, hand-placed data, token auth, T4 kernels, waiting for scores.

In-process where no client is needed (paths, init, train inside a simulated Kernel); the rest runs the CLI in a
subprocess whose real kaggle client talks to tests/fake_kaggle.py (tests/conftest_kaggle.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from test_kaggle import CONFIG, FILES, SLUG, assert_ok, assert_user_error, raw, write_experiment

from helpers.builders import REPO, run_main, tiny_experiment, write_competition
from helpers.fake_kaggle import FakeKaggle
from pipeline.core import paths

pytest_plugins = ["helpers.kaggle_env"]
if TYPE_CHECKING:
    from helpers.kaggle_env import Pipeline

# Where a Kernel mounts the competition `toy`: the old flat layout and today's.
MOUNTS = {"flat": "toy", "competitions": "competitions/toy"}


def kernel_input(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make `project` look like a Kaggle Kernel: an input root and a working folder."""
    root = project / "kaggle" / "input"
    root.mkdir(parents=True)
    monkeypatch.setattr(paths, "KAGGLE_INPUT", root)
    return root


# mount layouts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["toy"], "toy"),
        (["competitions/toy"], "competitions/toy"),
        (["toy", "competitions/toy"], "toy"),  # the flat form first
        (["datasets/someone/toy"], "datasets/someone/toy"),
        (["other/toy"], "other/toy"),
        (["competitions/toy/", "datasets/someone/toy"], "datasets/someone/toy"),  # an empty folder holds nothing
        ([], None),
    ],
)
def test_mounted_competition_is_the_first_folder_holding_files(
    project: Path, monkeypatch: pytest.MonkeyPatch, present: list[str], expected: str | None
) -> None:
    root = kernel_input(project, monkeypatch)
    for entry in present:
        (root / entry).mkdir(parents=True)
        if not entry.endswith("/"):
            (root / entry / "train.csv").write_text("id,label\n")
    bundle = root / "datasets" / "me" / "toy"  # a bundle dataset named like the competition is never it
    bundle.mkdir(parents=True, exist_ok=True)
    if not (bundle / "train.csv").exists():
        (bundle / "bundle.json").write_text("{}")
    found = paths.mounted_competition("toy")
    assert found == (root / expected if expected else None)
    assert paths.raw_dir("toy") == (found or project / "data" / "raw" / "toy")


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("mount", sorted(MOUNTS))
def test_download_init_train_use_the_kernels_mount(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, mount: str
) -> None:
    root = kernel_input(project, monkeypatch)
    mounted = write_competition(root / MOUNTS[mount], "csv", n_train=12, n_test=4)
    (mounted / ".complete").unlink()  # Kaggle's mount has no stamp of ours
    weights = project / "w"
    weights.mkdir()
    (weights / "tf_efficientnet_lite0.safetensors").write_bytes(b"")  # init's baseline names a local file
    monkeypatch.setenv("PIPELINE_WEIGHTS_DIR", str(weights))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # a Kernel needs no credentials for its own inputs

    result = run_main(capsys, "download", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    assert str(mounted) in result.stderr
    result = run_main(capsys, "init", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    assert "train_csv: train.csv" in (project / "configs/toy/competition.yaml").read_text()
    config = tiny_experiment(project, folds={"n_folds": 2})
    for stage in (("folds",), ("train", "--fold", "0")):
        result = run_main(capsys, *stage, "--config", str(config))
        assert result.returncode == 0, result.stderr
    assert (project / "data/runs/toy/tiny/fold0/model.safetensors").is_file()
    assert not (project / "data" / "raw").exists()  # nothing copied, nothing downloaded


# hand-placed data ----------------------------------------------------------------------------------------------


def test_download_adopts_a_folder_placed_by_hand(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    for name, data in FILES.items():
        (raw(pipeline.root) / name).parent.mkdir(parents=True, exist_ok=True)
        (raw(pipeline.root) / name).write_bytes(data)
    pipeline.without_credentials()  # adopting needs no Kaggle at all

    result = pipeline("download", "--comp", SLUG)
    assert_ok(result)
    assert f"adopted data/raw/{SLUG} (placed by hand)" in result.stderr
    stamp = json.loads((raw(pipeline.root) / ".complete").read_text())
    assert stamp["source"] == "placed by hand" and stamp["files"] == len(FILES)
    assert fake_kaggle.seen == []
    again = pipeline("download", "--comp", SLUG)
    assert_ok(again)
    assert "adopted" not in again.stderr


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        ({f"{SLUG}.zip.kaggle-partial": b"PK"}, ("partial download", "delete", "make download")),
        ({"train.csv": b"id\n", "leaf.zip.crdownload": b"PK"}, ("partial download", "leaf.zip.crdownload")),
        ({f"{SLUG}.zip": b"PK"}, ("not unzipped", "unzip it")),
        ({".hidden": b""}, ("is empty",)),
    ],
)
def test_download_refuses_a_partial_download(
    pipeline: Pipeline, fake_kaggle: FakeKaggle, files: dict[str, bytes], needles: tuple[str, ...]
) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    raw(pipeline.root).mkdir(parents=True)
    for name, data in files.items():
        (raw(pipeline.root) / name).write_bytes(data)
    assert_user_error(pipeline("download", "--comp", SLUG), str(raw(pipeline.root)), *needles)
    assert not (raw(pipeline.root) / ".complete").exists()
    assert fake_kaggle.calls() == []
    assert_ok(pipeline("download", "--comp", SLUG, "--force"))  # --force replaces it with a real download
    assert (raw(pipeline.root) / "train.csv").read_bytes() == FILES["train.csv"]


def test_init_adopts_a_folder_placed_by_hand(project: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    folder = write_competition(project / "data" / "raw" / "toy", "csv", n_train=12, n_test=4)
    (folder / ".complete").unlink()
    weights = project / "w"
    weights.mkdir()
    (weights / "tf_efficientnet_lite0.safetensors").write_bytes(b"")
    monkeypatch.setenv("PIPELINE_WEIGHTS_DIR", str(weights))

    result = run_main(capsys, "init", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    assert "adopted data/raw/toy (placed by hand)" in result.stderr
    assert (folder / ".complete").is_file()
    assert (project / "configs/toy/competition.yaml").is_file()


# token auth ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_token_wins_over_a_kaggle_json_without_key(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.token = "token-for-tests"
    pipeline.without_credentials()
    pipeline.env["KAGGLE_API_TOKEN"] = fake_kaggle.token
    config = Path(pipeline.env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"username": "someone-else"}))  # no key: the client never reads it with a token
    config.chmod(0o600)

    assert_ok(pipeline("scores", "--comp", SLUG))
    assert fake_kaggle.calls("ListSubmissions")[0].headers["authorization"] == f"Bearer {fake_kaggle.token}"


def test_a_notebooks_v1_token_file_is_used(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.token = "notebook-token"
    pipeline.without_credentials()
    token_file = pipeline.root / "v1-token"
    token_file.write_text(fake_kaggle.token + "\n")
    pipeline.env.update({"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_DATA_PROXY_URL": "http://127.0.0.1:9",
                         "KAGGLE_API_V1_TOKEN": str(token_file)})  # fmt: skip

    assert_ok(pipeline("scores", "--comp", SLUG))
    assert fake_kaggle.calls("ListSubmissions")[0].headers["authorization"] == f"Bearer {fake_kaggle.token}"


# python version ------------------------------------------------------------------------------------------------


def test_requires_python_is_what_the_kaggle_client_needs() -> None:
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    ours = re.fullmatch(r">=\s*3\.(\d+)", project["project"]["requires-python"])
    client = re.fullmatch(r">=\s*3\.(\d+)", importlib.metadata.metadata("kaggle")["Requires-Python"])
    assert ours and client and int(ours.group(1)) >= int(client.group(1)), (ours, client)
    assert project["tool"]["ruff"]["target-version"] == f"py3{ours.group(1)}"


# submit: checks before, the score after ----------------------------------------------------------------------


def test_submit_waits_for_the_score_and_prints_it(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    competition = fake_kaggle.add_competition(SLUG, FILES, pending_polls=2, public_score="0.91234")
    write_experiment(pipeline.root)

    result = pipeline("submit", "--config", CONFIG)
    assert_ok(result)
    ref = competition.submissions[0]["ref"]
    assert f"{SLUG}: submission #{ref} scored 0.91234" in result.stdout
    assert result.stderr.count(f"submission #{ref}: pending") == 2  # progress while Kaggle scores it
    assert len(fake_kaggle.calls("ListSubmissions")) == 3


def test_submit_wait_0_does_not_wait(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    write_experiment(pipeline.root)
    result = pipeline("submit", "--config", CONFIG, "--wait", "0")
    assert_ok(result)
    assert "scored" not in result.stdout and fake_kaggle.calls("ListSubmissions") == []


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_submission_kaggle_cannot_score_is_an_error_with_its_description(
    pipeline: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.add_competition(SLUG, FILES, error_description="Submission must have 2 rows")
    write_experiment(pipeline.root)
    assert_user_error(pipeline("submit", "--config", CONFIG), "could not score submission #",
                      "Submission must have 2 rows")  # fmt: skip
    assert_ok(pipeline("scores", "--comp", SLUG))
    table = pd.read_csv(pipeline.root / "data" / "runs" / SLUG / "leaderboard.csv")
    assert table.iloc[0]["status"] == "error" and table.iloc[0]["error"] == "Submission must have 2 rows"


@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ({"code_only": True}, ["code competition", "make kaggle-bundle kaggle-push kaggle-submit"]),
        ({"submissions_disabled": True}, ["takes no submissions"]),
        ({"max_daily": 5, "max_total": 1, "used": 1}, ["total limit", "1 submitted"]),
        ({"max_daily": 1, "used": 1}, ["no submissions left today", "midnight UTC"]),
    ],
    ids=["code-only", "closed", "total-limit", "daily-limit"],
)
def test_submit_asks_kaggle_before_uploading(
    pipeline: Pipeline, fake_kaggle: FakeKaggle, setup: dict, needles: list[str]
) -> None:
    used = setup.pop("used", 0)
    competition = fake_kaggle.add_competition(SLUG, FILES, **setup)
    competition.submissions = [{"ref": i + 1, "description": "earlier", "status": "COMPLETE"} for i in range(used)]
    write_experiment(pipeline.root)
    assert_user_error(pipeline("submit", "--config", CONFIG), *needles)
    assert fake_kaggle.calls("StartSubmissionUpload") == [] and fake_kaggle.uploads == {}


@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ({"rules_accepted": False}, ["403", "rules are not accepted", f"competitions/{SLUG}/rules"]),
        ({"deadline": "2020-01-01T00:00:00Z"}, ["403", "closed"]),
        ({"merger_deadline": "2020-01-01T00:00:00Z"}, ["403", "team-merger deadline"]),
    ],
    ids=["rules", "closed", "merger"],
)
def test_a_403_names_its_likely_cause(
    pipeline: Pipeline, fake_kaggle: FakeKaggle, setup: dict, needles: list[str]
) -> None:
    fake_kaggle.add_competition(SLUG, FILES, **setup)
    fake_kaggle.fail("DownloadDataFiles", 403, service="competitions.CompetitionApiService")
    assert_user_error(pipeline("download", "--comp", SLUG), *needles)


# timeouts and retries ------------------------------------------------------------------------------------------


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_reads_retry_5xx_and_429_honouring_retry_after(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.fail("ListSubmissions", 503)
    fake_kaggle.fail("ListSubmissions", 429, retry_after=1)

    result = pipeline("scores", "--comp", SLUG)
    assert_ok(result)
    assert "(HTTP 503); retry 1 of 3 in 0 s" in result.stderr
    assert "(HTTP 429); retry 2 of 3 in 1 s" in result.stderr  # Retry-After, not the backoff
    assert len(fake_kaggle.calls("ListSubmissions")) == 3


def test_a_rate_limited_upload_is_not_retried_and_says_when(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.fail("CreateSubmission", 429, retry_after=600)
    write_experiment(pipeline.root)
    assert_user_error(pipeline("submit", "--config", CONFIG), "429", "retry after 600 s")
    assert len(fake_kaggle.calls("CreateSubmission")) == 1


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_stalled_call_times_out(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.fail("ListSubmissions", 0, times=2, stall=3)
    pipeline.env.update(PIPELINE_KAGGLE_TIMEOUT="0.5", PIPELINE_KAGGLE_RETRIES="2")
    assert_user_error(pipeline("scores", "--comp", SLUG, timeout=30), "could not reach Kaggle", "Timeout")


def test_the_submission_listing_dedupes_and_stops_on_a_repeated_page(
    pipeline: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    competition = fake_kaggle.add_competition(SLUG, FILES, repeat_pages=True)
    competition.submissions = [{"ref": i, "description": "x", "status": "COMPLETE"} for i in range(100)]
    assert_ok(pipeline("scores", "--comp", SLUG))
    table = pd.read_csv(pipeline.root / "data" / "runs" / SLUG / "leaderboard.csv")
    assert sorted(table["submission_id"]) == list(range(100))
    assert len(fake_kaggle.calls("ListSubmissions")) == 2  # page 2 repeated page 1: stop


def test_download_follows_a_redirect_to_another_host(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    blobs = fake_kaggle.add_blob_host()
    assert_ok(pipeline("download", "--comp", SLUG))
    assert (raw(pipeline.root) / "train.csv").read_bytes() == FILES["train.csv"]
    assert [s.path for s in blobs.seen] == [f"/blobs/{SLUG}.zip"]
    assert not [s for s in fake_kaggle.seen if s.path.startswith("/blobs/")]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_make_download_adopts_hand_placed_data_once(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    import subprocess

    from helpers.builders import REPO

    for name, data in FILES.items():
        (raw(pipeline.root) / name).parent.mkdir(parents=True, exist_ok=True)
        (raw(pipeline.root) / name).write_bytes(data)
    env = {k: v for k, v in pipeline.env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}

    def make(*args: str) -> subprocess.CompletedProcess:
        command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), *args]
        done = subprocess.run(command, cwd=pipeline.root, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    first = make("download", f"COMP={SLUG}")
    assert f"adopted data/raw/{SLUG} (placed by hand)" in first.stderr
    assert (raw(pipeline.root) / ".complete").is_file()
    second = make("download", f"COMP={SLUG}")  # the stamp is Make's target: nothing left to do
    assert "pipeline download" not in second.stdout
    assert fake_kaggle.seen == []
