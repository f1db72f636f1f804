"""download, submit and scores against a fake Kaggle server, through the real kaggle client (never mocked).

The subprocess tests run `python -m pipeline <stage>` with the environment tests/conftest_kaggle.py builds; the
in-process tests cover what needs no client: submission validation, zip entry checks, argument handling.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import socket
import stat
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import yaml

import pipeline as pipeline_package
from helpers.builders import write_competition
from helpers.fake_kaggle import FakeKaggle, make_zip
from pipeline.core.errors import UserError
from pipeline.inference.validate import check_submission, is_probability_sample
from pipeline.kaggle import download
from pipeline.kaggle.submit import describe, experiment_from_description

# tests/ is no package (a dependency installs a top-level `tests` package that would shadow it): pytest puts
# tests/ on sys.path, so siblings are imported by their own names.
pytest_plugins = ["helpers.kaggle_env"]
if TYPE_CHECKING:  # importing it here first would stop pytest rewriting its asserts
    from helpers.kaggle_env import Pipeline

SLUG = "leaf-test"
FILES = {
    "train.csv": b"id,label\na,cat\nb,dog\n",
    "sample_submission.csv": b"id,label\nc,cat\nd,cat\n",
    "train/a.jpg": bytes(range(256)) * 40,
    "train/b.jpg": b"\xff\xd8" + b"jpeg" * 3000,
}


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, no traceback, stderr's last line is `error: ...` holding every needle; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.stdout, result.stderr)


def raw(root: Path, slug: str = SLUG) -> Path:
    return root / "data" / "raw" / slug


def zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("train/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def corrupt_crc() -> bytes:
    """A zip whose member bytes were altered after the CRC was written (stored, so the bytes are findable)."""
    data = zip_with([("train.csv", b"id,label\n" + b"a,cat\n" * 50)], zipfile.ZIP_STORED)
    return data.replace(b"a,cat\na,cat", b"a,cat\na,cow", 1)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# download ------------------------------------------------------------------------------------------------------


def test_download_extracts_stamps_and_skips_when_done(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    assert_ok(pipeline("download", "--comp", SLUG))

    target = raw(pipeline.root)
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data
    assert json.loads((target / ".complete").read_text())["files"] == len(FILES)
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # the zip and the extraction folder are gone
    assert [s.json() for s in fake_kaggle.calls("DownloadDataFiles")] == [{"competitionName": SLUG}]
    calls = len(fake_kaggle.calls())  # the download and the metadata look-up (the competition's metric)

    # The stamp makes a re-run a no-op; --config configs/<comp>/<exp>.yaml names the same competition.
    again = pipeline("download", "--config", f"configs/{SLUG}/baseline.yaml")
    assert_ok(again)
    assert len(fake_kaggle.calls()) == calls
    assert "nothing to do" in again.stderr


def real_competition_files(tmp_path: Path, layout: str = "csv") -> dict[str, bytes]:
    """The files of a tiny real competition (decodable images, a train table, a sample submission)."""
    source = write_competition(tmp_path / "source", layout)
    return {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*")
            if p.is_file() and not p.name.startswith(".")}  # fmt: skip


@pytest.mark.parametrize(("kaggle_name", "metric", "said"), [
    ("Macro F1 Score", "f1_macro", "metric: f1_macro (Kaggle's evaluation metric: 'Macro F1 Score')"),
    ("Weighted Dice Coefficient", "accuracy", "Kaggle scores this competition with 'Weighted Dice Coefficient', "
                                              "which the pipeline does not know"),
])  # fmt: skip
def test_download_records_kaggles_metric_and_init_maps_it(pipeline: Pipeline, fake_kaggle: FakeKaggle,
                                                          tmp_path: Path, kaggle_name: str, metric: str,
                                                          said: str) -> None:  # fmt: skip
    """The metric comes from the competition's metadata through the real client; an unknown name is said, with the
    key to set, instead of a silent accuracy."""
    fake_kaggle.add_competition(SLUG, real_competition_files(tmp_path), evaluation_metric=kaggle_name)
    assert_ok(pipeline("download", "--comp", SLUG))
    assert json.loads((raw(pipeline.root) / ".complete").read_text())["evaluation_metric"] == kaggle_name
    assert fake_kaggle.calls("ListCompetitions"), "the metric must come from Kaggle's competition metadata"
    weights = pipeline.root / "data" / "weights" / "tf_efficientnet_lite0.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"offline weights stand-in")  # init only points model.pretrained at it
    result = pipeline("init", "--comp", SLUG)
    assert_ok(result)
    assert said in result.stdout
    if metric == "accuracy":
        assert "set `metric:` in" in result.stdout
    written = yaml.safe_load((pipeline.root / "configs" / SLUG / "competition.yaml").read_text())
    assert written["metric"] == metric


BAD_DOWNLOADS = {
    # case: (competition set-up, environment change, words the error line must hold)
    "bad-key": ({}, {"KAGGLE_KEY": "wrong-key"}, ["401", "KAGGLE_USERNAME/KAGGLE_KEY", "settings/api"]),
    "rules": ({"rules_accepted": False}, {}, ["403", f"https://www.kaggle.com/competitions/{SLUG}/rules"]),
    "unknown": (None, {}, ["404", f"no competition '{SLUG}'"]),
    "truncated": ({"blob": make_zip(FILES)[:-100]}, {}, ["corrupt or truncated", "nothing was extracted"]),
    "corrupt": ({"blob": corrupt_crc()}, {}, ["train.csv", "CRC", "nothing was extracted"]),
    "zip-slip": ({"blob": zip_with([("ok.csv", b"1"), ("../evil.txt", b"x")])}, {}, ["../evil.txt", "'..'"]),
    "absolute": ({"blob": zip_with([("/tmp/evil.txt", b"x")])}, {}, ["absolute path"]),
    "symlink": ({"blob": zip_with([(symlink_entry(), b"/etc/passwd")])}, {}, ["link.jpg", "symbolic link"]),
    "no-server": ({}, {"HTTP_PROXY": "CLOSED", "http_proxy": "CLOSED"}, ["could not reach Kaggle", "re-run"]),
}


@pytest.mark.parametrize("case", BAD_DOWNLOADS)
def test_download_failures_are_one_clear_line(pipeline: Pipeline, fake_kaggle: FakeKaggle, case: str) -> None:
    setup, env, needles = BAD_DOWNLOADS[case]
    if setup is not None:
        fake_kaggle.add_competition(SLUG, FILES, **setup)
    pipeline.env.update({k: f"http://127.0.0.1:{closed_port()}" if v == "CLOSED" else v for k, v in env.items()})

    assert_user_error(pipeline("download", "--comp", SLUG), *needles)
    assert not raw(pipeline.root).exists()  # nothing published, so nothing looks complete
    assert not list(pipeline.root.rglob("evil.txt"))
    assert not (pipeline.root / "data" / "raw" / f".{SLUG}.extracting").exists()


def test_download_resumes_after_the_server_dies_mid_transfer(pipeline: Pipeline, tmp_path: Path) -> None:
    # The client writes 1 MiB chunks and loses a chunk cut short, so the zip must span a few of them.
    files = {**FILES, "train/big.jpg": random.Random(0).randbytes(3 << 20)}
    blob = make_zip(files)
    with FakeKaggle() as dying:
        dying.add_competition(SLUG, files)
        dying.die_after_bytes = len(blob) // 2
        pipeline.route_to(dying.url)
        assert_user_error(pipeline("download", "--comp", SLUG), "could not reach Kaggle", "re-run")
    assert not raw(tmp_path).exists()
    partial = tmp_path / "data" / "raw" / f".{SLUG}.download" / f"{SLUG}.zip"
    kept = partial.stat().st_size
    assert 0 < kept <= len(blob) // 2  # whole chunks received before the server died stay for the next run

    with FakeKaggle() as back:  # the same competition served again, on another port
        back.add_competition(SLUG, files)
        pipeline.route_to(back.url)
        assert_ok(pipeline("download", "--comp", SLUG))
        ranges = [s.headers.get("range") for s in back.seen if s.method == "GET" and "range" in s.headers]
    assert ranges == [f"bytes={kept}-"]  # resumed, not started over
    assert (raw(tmp_path) / "train" / "big.jpg").read_bytes() == files["train/big.jpg"]
    assert (raw(tmp_path) / ".complete").exists()


def test_download_discards_what_an_interrupted_extraction_left(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    leftover = pipeline.root / "data" / "raw" / f".{SLUG}.extracting"
    leftover.mkdir(parents=True)
    (leftover / "train.csv").write_text("half written")

    assert_ok(pipeline("download", "--comp", SLUG))
    assert (raw(pipeline.root) / "train.csv").read_bytes() == FILES["train.csv"]
    assert not leftover.exists()


def test_download_uses_a_kernel_input_folder_in_place(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    mounted = pipeline.root / "kaggle" / "input" / SLUG
    mounted.mkdir(parents=True)
    (mounted / "train.csv").write_bytes(FILES["train.csv"])
    pipeline.without_credentials()  # a Kernel needs none for its own inputs

    result = pipeline("download", "--comp", SLUG)
    assert_ok(result)
    assert str(mounted) in result.stderr
    assert not (pipeline.root / "data").exists()  # no copy
    assert fake_kaggle.seen == []


# credentials --------------------------------------------------------------------------------------------------


def test_missing_credentials_list_the_three_ways_before_importing_kaggle(
    pipeline: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    pipeline.without_credentials()

    result = pipeline("download", "--comp", SLUG)
    assert_user_error(result, "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "kaggle.json")
    assert "Authentication required" not in result.stdout + result.stderr  # the client's help text: not imported
    assert fake_kaggle.seen == []


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o600, False)])
def test_kaggle_json_readable_by_others_is_warned_about(
    pipeline: Pipeline, fake_kaggle: FakeKaggle, mode: int, warned: bool
) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    pipeline.without_credentials()
    config = Path(pipeline.env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"username": fake_kaggle.username, "key": fake_kaggle.key}))
    config.chmod(mode)

    result = pipeline("scores", "--comp", SLUG)
    assert_ok(result)
    assert ("readable by other users" in result.stderr and "chmod 600" in result.stderr) is warned
    assert fake_kaggle.calls("ListSubmissions")[0].headers["authorization"].startswith("Basic ")


def test_access_token_is_introspected_then_sent_as_bearer(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    fake_kaggle.token = "token-for-tests"
    pipeline.without_credentials()
    pipeline.env["KAGGLE_API_TOKEN"] = fake_kaggle.token

    assert_ok(pipeline("scores", "--comp", SLUG))
    assert fake_kaggle.calls("IntrospectToken")[0].json() == {"token": fake_kaggle.token}
    assert fake_kaggle.calls("ListSubmissions")[0].headers["authorization"] == f"Bearer {fake_kaggle.token}"


# submit and scores --------------------------------------------------------------------------------------------


def write_experiment(root: Path, submission: str = "id,label\nc,dog\nd,cat\n", cv: float = 0.875) -> Path:
    """A competition whose raw data, config, scores and submission exist: what submit needs."""
    configs = root / "configs" / SLUG
    configs.mkdir(parents=True)
    (configs / "competition.yaml").write_text("metric: accuracy\ndata:\n  classes: [cat, dog]\n")
    (configs / "baseline.yaml").write_text("train:\n  epochs: 1\n")
    raw(root).mkdir(parents=True, exist_ok=True)
    (raw(root) / "sample_submission.csv").write_bytes(FILES["sample_submission.csv"])
    run = root / "data" / "runs" / SLUG / "baseline"
    run.mkdir(parents=True)
    (run / "scores.json").write_text(json.dumps({"metric": "accuracy", "cv": cv}))
    path = root / "submissions" / SLUG / "baseline.csv"
    path.parent.mkdir(parents=True)
    path.write_text(submission)
    return path


CONFIG = f"configs/{SLUG}/baseline.yaml"


def test_submit_uploads_the_identical_file_with_a_traceable_description(
    pipeline: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    competition = fake_kaggle.add_competition(SLUG, FILES)
    submission = write_experiment(pipeline.root)

    result = pipeline("submit", "--config", CONFIG)
    assert_ok(result)
    assert list(fake_kaggle.uploads.values()) == [submission.read_bytes()]
    (create,) = fake_kaggle.calls("CreateSubmission")
    body = create.json()
    assert body["competitionName"] == SLUG and body["blobFileTokens"] in fake_kaggle.uploads
    assert body["submissionDescription"].startswith("baseline | CV accuracy 0.87500 | git ")
    assert experiment_from_description(body["submissionDescription"]) == "baseline"
    start = fake_kaggle.calls("StartSubmissionUpload")[0].json()
    assert start["contentLength"] == submission.stat().st_size
    assert "4 submission(s) left today" in result.stderr
    assert len(competition.submissions) == 1


def test_submit_validates_before_any_call(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.add_competition(SLUG, FILES)
    write_experiment(pipeline.root, submission="id,label\nd,cat\nc,dog\n")  # ids out of order

    line = assert_user_error(pipeline("submit", "--config", CONFIG), "baseline.csv", "row 1 (line 2)", "'id'")
    assert "sample_submission" in line
    assert fake_kaggle.seen == []


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
@pytest.mark.parametrize(
    "setup, needles",
    [
        ({"upload_status": 500}, ["upload", "failed", "nothing was submitted"]),
        ({"rules_accepted": False}, ["403", f"https://www.kaggle.com/competitions/{SLUG}/rules"]),
        ({"max_daily": 1, "used": 1}, ["no submissions left today"]),
    ],
    ids=["upload-refused", "rules", "daily-limit"],
)
def test_submit_reports_a_refusal_even_where_the_client_would_not(
    pipeline: Pipeline, fake_kaggle: FakeKaggle, setup: dict[str, int], needles: list[str]
) -> None:
    competition = fake_kaggle.add_competition(SLUG, FILES, rules_accepted=setup.get("rules_accepted", True))
    competition.max_daily = setup.get("max_daily", 5)
    competition.submissions = [{"ref": 1, "description": "earlier"}] * setup.get("used", 0)
    fake_kaggle.upload_status = setup.get("upload_status", 200)
    write_experiment(pipeline.root)

    assert_user_error(pipeline("submit", "--config", CONFIG), *needles)
    assert fake_kaggle.calls("CreateSubmission") == []


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_scores_joins_leaderboard_to_local_cv(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    competition = fake_kaggle.add_competition(SLUG, FILES)
    competition.submissions = [
        {
            "ref": 11,
            "date": "2024-01-03T00:00:00.000Z",
            "description": describe("baseline", "accuracy", 0.875, "abc123"),
            "status": "COMPLETE",
            "publicScore": "0.86100",
            "privateScore": "0.85000",
        },
        {"ref": 10, "date": "2024-01-01T00:00:00.000Z", "description": "by hand", "status": "ERROR"},
    ]
    write_experiment(pipeline.root)
    other = pipeline.root / "data" / "runs" / SLUG / "bigger"
    other.mkdir(parents=True)
    (other / "scores.json").write_text(json.dumps({"metric": "accuracy", "cv": 0.9}))

    result = pipeline("scores", "--comp", SLUG)
    assert_ok(result)
    table = pd.read_csv(pipeline.root / "data" / "runs" / SLUG / "leaderboard.csv")
    assert table["submission_id"].tolist()[:2] == [11, 10]
    first = table.iloc[0]
    assert (first["experiment"], first["cv"], first["public_score"], first["private_score"]) == (
        "baseline",
        0.875,
        0.861,
        0.85,
    )
    assert first["status"] == "complete" and table.iloc[1]["status"] == "error"
    assert table.iloc[2]["experiment"] == "bigger" and pd.isna(table.iloc[2]["submission_id"])
    assert "baseline" in result.stdout and "0.861" in result.stdout


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_the_key_is_never_written_printed_or_logged(pipeline: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.key = "k3y-" + "5ecret" * 5
    pipeline.env["KAGGLE_KEY"] = fake_kaggle.key
    pipeline.env["PIPELINE_DEBUG"] = "1"  # debug logging on: the client's chatter reaches stderr too
    fake_kaggle.add_competition(SLUG, FILES)
    outputs = [pipeline("download", "--comp", SLUG)]
    write_experiment(pipeline.root)
    outputs += [pipeline("submit", "--config", CONFIG), pipeline("scores", "--comp", SLUG)]
    pipeline.env["KAGGLE_KEY"] = "a-wrong-" + fake_kaggle.key  # an error message must not echo it either
    outputs.append(pipeline("scores", "--comp", SLUG))

    basic = base64.b64encode(f"{fake_kaggle.username}:{fake_kaggle.key}".encode())
    assert [r.returncode for r in outputs] == [0, 0, 0, 2]
    for result in outputs:
        assert fake_kaggle.key not in result.stdout + result.stderr
        assert basic.decode() not in result.stdout + result.stderr
    files = [p for p in pipeline.root.rglob("*") if p.is_file()]
    assert len(files) > len(FILES)
    for path in files:
        data = path.read_bytes()
        assert fake_kaggle.key.encode() not in data and basic not in data, path


# in-process: no client needed ---------------------------------------------------------------------------------

SAMPLE = pd.DataFrame({"id": ["a", "b", "c"], "cat": [0.5, 0.5, 0.5], "dog": [0.5, 0.5, 0.5]})

BAD_SUBMISSIONS = {
    "column order": (SAMPLE[["id", "dog", "cat"]], "column 2 is 'dog'"),
    "missing column": (SAMPLE[["id", "cat"]], "missing ['dog']"),
    "extra column": (SAMPLE.assign(cow=0.1), "unexpected ['cow']"),
    "row count": (SAMPLE.iloc[:2], "2 rows but sample_submission has 3"),
    "id order": (SAMPLE.assign(id=["a", "c", "b"]), "row 2 (line 3), column 'id' is 'c'"),
    "empty cell": (SAMPLE.assign(dog=[0.5, None, 0.5]), "row 2 (line 3), column 'dog' is empty"),
    "not a number": (SAMPLE.assign(cat=["0.5", "x", "0.5"]), "column 'cat' is 'x', not a number"),
    "above one": (SAMPLE.assign(cat=[0.5, 0.5, 1.5]), "row 3 (line 4), column 'cat' is 1.5, not a probability"),
    "below zero": (SAMPLE.assign(dog=[-0.1, 0.5, 0.5]), "row 1 (line 2), column 'dog' is -0.1"),
}


@pytest.mark.parametrize("case", BAD_SUBMISSIONS)
def test_check_submission_names_file_row_and_column(case: str) -> None:
    frame, needle = BAD_SUBMISSIONS[case]
    with pytest.raises(UserError, match="^sub.csv: ") as caught:
        check_submission(frame.reset_index(drop=True), SAMPLE, "sub.csv")
    assert needle in str(caught.value)


def test_check_submission_accepts_matching_tables() -> None:
    check_submission(SAMPLE.assign(cat=[0.0, 1.0, 0.2], dog=["1", "0", "0.8"]), SAMPLE, "sub.csv")
    ordinal = pd.DataFrame({"id_code": [1, 2], "diagnosis": [0, 3]})
    check_submission(pd.DataFrame({"id_code": ["1", "2"], "diagnosis": [4, 2]}), ordinal, "sub.csv")  # ids as text
    labels = pd.DataFrame({"id": ["a"], "tags": ["x y"]})
    check_submission(pd.DataFrame({"id": ["a"], "tags": ["clear"]}), labels, "sub.csv")
    assert is_probability_sample(SAMPLE) and not is_probability_sample(ordinal) and not is_probability_sample(labels)
    with pytest.raises(UserError, match="not a probability"):  # forced, for a sample of zeros typed as ints
        check_submission(pd.DataFrame({"id_code": [1, 2], "diagnosis": [0, 3]}), ordinal, "s.csv", True)


@pytest.mark.parametrize(
    "name, reason",
    [("a/../../x", "'..'"), ("/etc/x", "absolute"), ("C:/x", "absolute"), ("..\\x", "'..'"), ("train/ok.jpg", None)],
)
def test_unsafe_zip_entries(name: str, reason: str | None) -> None:
    found = download.unsafe_reason(zipfile.ZipInfo(name))
    assert found is None if reason is None else reason in found


def test_comp_argument(tmp_path: Path) -> None:
    args = argparse.Namespace(command="download", comp=None, config=str(tmp_path / "configs" / "x-1" / "b.yaml"))
    assert download.comp_from_args(args) == "x-1"
    for bad in ("../etc", "a/b", ""):
        with pytest.raises(UserError):
            download.comp_from_args(argparse.Namespace(command="download", comp=bad, config=None))


def test_demo_is_materialised_without_kaggle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path))
    calls: list[Path] = []
    stand_in = types.SimpleNamespace(materialise=calls.append)  # the real demo is tested with the chain
    monkeypatch.setitem(sys.modules, "pipeline.data.demo", stand_in)
    monkeypatch.setattr(pipeline_package, "demo", stand_in, raising=False)
    download.run(argparse.Namespace(command="download", comp="demo", config=None, force=False))
    assert calls == [tmp_path / "data" / "raw" / "demo"]
