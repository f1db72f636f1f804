"""Shipping to Kaggle without silent losses (issue 22): each test drives the real kaggle client against
tests/helpers/fake_kaggle.py behaving as Kaggle does, on a bundle written straight to disk (helpers.kaggle_bundle).

Kaggle's ways that the pipeline must survive: a file whose upload failed is skipped by the client without a word and
the version is created without it; a dataset that does not exist yet answers 403, not 404; a kernel's session status
carries no version and still answers the previous run's `complete` right after a push.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers.fake_kaggle import FakeKaggle
from helpers.kaggle_bundle import COMP, CONFIG, DATASET, FILES, KERNEL, MODEL, pushed_record, write_bundle
from helpers.kaggle_env import pusher

pytest_plugins = ["helpers.kaggle_env"]
if TYPE_CHECKING:
    from helpers.kaggle_env import Pipeline


def user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, no traceback, the last stderr line is `error: ...` holding every needle; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), (needles, result.stderr)
    return last


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


@pytest.fixture
def push(tmp_path: Path, fake_kaggle: FakeKaggle) -> Pipeline:
    root = tmp_path / "project"
    write_bundle(root)
    fake_kaggle.add_competition(COMP, code_only=True, public_score="0.81000")
    return pusher(root, fake_kaggle, tmp_path)


# 1. a failed upload ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # several CLI runs in subprocesses
def test_a_dropped_upload_is_named_and_nothing_counts_as_uploaded(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.fail_uploads = {"fold1.safetensors"}  # the client retries, gives up, and creates the version anyway

    user_error(push("kaggle-push", "--config", CONFIG), DATASET, "version 1", "fold1.safetensors",
               "nothing is recorded as uploaded")  # fmt: skip
    assert "fold1.safetensors" not in fake_kaggle.datasets[DATASET].versions[0]  # what Kaggle really holds
    assert "files" not in pushed_record(push.root) and "pending" not in pushed_record(push.root)
    assert KERNEL not in fake_kaggle.kernels  # never run on an incomplete bundle

    fake_kaggle.fail_uploads = set()
    ok(push("kaggle-push", "--config", CONFIG))  # the re-run uploads every file again, as a new version
    second = fake_kaggle.datasets[DATASET].versions[1]
    assert (
        sorted(second) == sorted([*FILES, "bundle.json"]) and second["fold1.safetensors"] == FILES["fold1.safetensors"]
    )
    assert set(pushed_record(push.root)["files"]) - {"dataset-metadata.json"} == set(second)
    assert fake_kaggle.kernels[KERNEL][0]["datasetDataSources"] == [f"{DATASET}/2"]


@pytest.mark.slow  # several CLI runs in subprocesses
def test_an_unchanged_bundle_is_still_checked_against_what_kaggle_lists(
    push: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    ok(push("kaggle-push", "--config", CONFIG))
    del fake_kaggle.datasets[DATASET].versions[0]["folds.csv"]  # lost on Kaggle's side since

    user_error(push("kaggle-push", "--config", CONFIG), "folds.csv")
    assert "files" not in pushed_record(push.root) and len(fake_kaggle.kernels[KERNEL]) == 1


# 2. 403 for a dataset that does not exist yet --------------------------------------------------------------------


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_first_push_creates_the_dataset_kaggle_answered_403_for(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    result = ok(push("kaggle-push", "--config", CONFIG))

    (status, *_) = fake_kaggle.calls("GetDatasetStatus")
    assert status.json()["datasetSlug"] == "toy-tiny-bundle"  # answered 403: the fake does as Kaggle does
    assert fake_kaggle.calls("CreateDataset") and DATASET in fake_kaggle.datasets
    assert "only be written by its owner" not in result.stderr


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_403_on_another_accounts_dataset_stays_a_refusal(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.username = "someone-else"  # the same key now logs in as another account
    push.env["KAGGLE_USERNAME"] = "someone-else"
    user_error(push("kaggle-push", "--config", CONFIG), "belongs to Kaggle user 'fake-user'")
    assert not fake_kaggle.calls("CreateDataset")


# 3. the version kaggle-submit waits for and submits --------------------------------------------------------------


@pytest.mark.slow  # several CLI runs in subprocesses
def test_kaggle_submit_waits_for_the_pushed_version_not_the_previous_runs_complete(
    push: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    ok(push("kaggle-push", "--config", CONFIG))
    ok(push("kaggle-submit", "--config", CONFIG, "--wait", "0", "--no-follow"))  # version 1: ran and submitted
    fake_kaggle.kernel_stale_polls = 3  # right after the next push Kaggle still answers version 1's COMPLETE
    ok(push("kaggle-push", "--config", CONFIG))
    assert pushed_record(push.root)["kernel_version"] == 2

    result = ok(push("kaggle-submit", "--config", CONFIG, "--wait", "0", "--no-follow"))
    assert result.stderr.count("waiting for version 2 to start") == 3, result.stderr
    first, second = fake_kaggle.calls("CreateCodeSubmission")
    assert (first.json()["kernelVersion"], second.json()["kernelVersion"]) == (1, 2)
    assert fake_kaggle.runs[KERNEL][1].steps == ["COMPLETE"]  # version 2's own run had ended when it was submitted


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_run_that_ended_before_kaggle_submit_looked_is_recognised_by_the_listing(
    push: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    ok(push("kaggle-push", "--config", CONFIG))
    run = fake_kaggle.runs[KERNEL][0]
    run.started, run.steps = "2999-01-01T00:00:00.000Z", ["COMPLETE"]  # ran and ended while nobody was polling

    result = ok(push("kaggle-submit", "--config", CONFIG, "--wait", "0", "--no-follow"))
    assert "waiting for version" not in result.stderr
    assert (
        fake_kaggle.calls("ListKernels") and fake_kaggle.calls("CreateCodeSubmission")[0].json()["kernelVersion"] == 1
    )


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_kaggle_submit_streams_the_kernels_log_while_it_runs(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    ok(push("kaggle-push", "--config", CONFIG))
    result = ok(push("kaggle-submit", "--config", CONFIG, "--wait", "0"))
    lines = [line for line in result.stderr.splitlines() if line.startswith("  | ")]
    assert lines == [f"  | log line {i}" for i in range(30)]  # every line once, in order
    streams = [s for s in fake_kaggle.seen if s.path.startswith("/api/v1/kernels/logs/stream/")]
    assert [s.path for s in streams] == [f"/api/v1/kernels/logs/stream/{KERNEL}"]


# 5 and 8. the client's login at import ---------------------------------------------------------------------------


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_token_rejected_at_introspection_is_one_line_naming_its_source(
    push: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.token = "the-right-token"
    push.without_credentials()
    push.env["KAGGLE_API_TOKEN"] = "a-revoked-token"

    last = user_error(push("kaggle-push", "--config", CONFIG), "KAGGLE_API_TOKEN", "rejected the token")
    assert "a-revoked-token" not in last
    assert {s.path.rsplit("/", 1)[-1] for s in fake_kaggle.calls()} == {"IntrospectToken"}  # nothing sent logged out


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_stalled_login_at_import_times_out_and_is_named_the_network(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.token = "the-right-token"
    push.without_credentials()
    push.env.update({"KAGGLE_API_TOKEN": "the-right-token", "PIPELINE_KAGGLE_TIMEOUT": "1"})
    fake_kaggle.fail("IntrospectToken", 0, times=2, stall=6)  # answers, but only after 6 s

    user_error(push("kaggle-push", "--config", CONFIG, timeout=30), "could not reach Kaggle", "KAGGLE_API_TOKEN",
               "network, not the credentials")  # fmt: skip
    assert not fake_kaggle.calls("GetDatasetStatus")


# 6. accelerators ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "words"), [("p100", ["retired", "runs elsewhere"]), ("l4", ["may be refused"]),
                                                ("t4x2", [])])  # fmt: skip
def test_p100_and_l4_say_what_kaggle_does_with_them(
    choice: str, words: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from pipeline.kaggle.bundle_assembly import choose_accelerator

    monkeypatch.delenv("KAGGLE_ACCELERATOR", raising=False)
    with caplog.at_level("WARNING"):
        assert choose_accelerator(SimpleNamespace(device="auto"), choice) == choice
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert all(word in warned for word in words) and bool(warned) == bool(words), warned
    assert choose_accelerator(SimpleNamespace(device="auto"), None) == "t4x2"


# 7. the output file the competition expects ------------------------------------------------------------------------


@pytest.mark.parametrize(("sample", "expected"), [("sample_submission.csv", "submission.csv"),
                                                  ("sample_predictions.csv", "predictions.csv"),
                                                  ("data/sampleSubmission.csv", "submission.csv"),
                                                  ("test.csv", "submission.csv"),
                                                  (None, "submission.csv")])  # fmt: skip
def test_the_output_file_is_named_after_the_sample_submission(sample: str | None, expected: str) -> None:
    from pipeline.kaggle.bundle_format import output_file_name

    assert output_file_name(sample) == expected


def test_a_parquet_sample_or_an_evaluation_server_is_refused(tmp_path: Path) -> None:
    from pipeline.core.errors import UserError
    from pipeline.kaggle.bundle_format import check_no_evaluation_server, output_file_name

    with pytest.raises(UserError, match="sample_submission.parquet.*CSV only"):
        output_file_name("sample_submission.parquet")
    check_no_evaluation_server(tmp_path / "raw", "toy")  # no data here: nothing to refuse
    (tmp_path / "raw" / "kaggle_evaluation").mkdir(parents=True)
    with pytest.raises(UserError, match="evaluation server.*kaggle_evaluation"):
        check_no_evaluation_server(tmp_path / "raw", "toy")


@pytest.mark.slow  # several CLI runs in subprocesses
def test_kaggle_submit_submits_the_file_the_competition_names(tmp_path: Path, fake_kaggle: FakeKaggle) -> None:
    root = tmp_path / "project"
    write_bundle(root, output_file="predictions.csv")
    fake_kaggle.add_competition(COMP, code_only=True)
    fake_kaggle.kernel_output_name = "predictions.csv"
    push = pusher(root, fake_kaggle, tmp_path)
    ok(push("kaggle-push", "--config", CONFIG))

    ok(push("kaggle-submit", "--config", CONFIG, "--wait", "0", "--no-follow"))
    assert fake_kaggle.calls("CreateCodeSubmission")[0].json()["fileName"] == "predictions.csv"


# quota before pushing ----------------------------------------------------------------------------------------------


def _plan(root: Path, seconds: float) -> None:
    """bundle.json's planned_seconds, as kaggle-bundle writes it from `make plan`."""
    import json

    manifest = root / "data" / "runs" / COMP / "tiny" / "kaggle-bundle" / "dataset" / "bundle.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "planned_seconds": seconds}))


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_gpu_push_beyond_the_quota_left_is_refused_before_uploading(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    fake_kaggle.gpu_quota_hours = (29.0, 30.0)  # 1 h left this week
    _plan(push.root, 2 * 3600)

    user_error(push("kaggle-push", "--config", CONFIG), "planned run", "only 1.0 h of GPU quota", "--force")
    assert fake_kaggle.calls("GetAcceleratorQuotaStatistics") and not fake_kaggle.calls("StartBlobUpload")

    _plan(push.root, 20 * 60)  # 20 minutes fit in the hour left
    result = ok(push("kaggle-push", "--config", CONFIG))
    assert "GPU quota 1.0 h left of 30.0 h" in result.stderr and KERNEL in fake_kaggle.kernels


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_run_longer_than_kaggles_limit_is_refused_unless_forced(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    _plan(push.root, 10 * 3600)  # quota: 30 h left; Kaggle's limit: 9 h
    user_error(push("kaggle-push", "--config", CONFIG), "stops a kernel after 9h")
    result = ok(push("kaggle-push", "--config", CONFIG, "--force"))
    assert "pushing anyway (--force)" in result.stderr


# where you stand ---------------------------------------------------------------------------------------------------


def test_scores_adds_the_public_rank_and_the_gaps_to_the_top_and_the_medals(
    tmp_path: Path, fake_kaggle: FakeKaggle
) -> None:
    import pandas as pd

    root = tmp_path / "project"
    write_bundle(root)
    board = [(f"team{i}", round(0.95 - 0.01 * i, 2)) for i in range(30)]  # 0.95 ... 0.66, best first
    competition = fake_kaggle.add_competition(COMP, leaderboard=board, pending_polls=0, public_score="0.905")
    fake_kaggle.add_submission(competition, "tiny | CV accuracy 0.5 | abc", b"")
    push = pusher(root, fake_kaggle, tmp_path)

    result = ok(push("scores", "--comp", COMP))
    assert len(fake_kaggle.calls("GetLeaderboard")) == 1  # 30 teams: one page of 100
    line = result.stdout.strip().splitlines()[-1]
    # 0.905 sits behind 0.95, 0.94, 0.93, 0.92, 0.91: rank 6 of 30; gold = top 10% = rank 3 (0.93)
    assert "public rank 6 of 30 with 0.905 (top 0.95, gap 0.045)" in line, line
    assert "gold to rank 3 (0.93: 0.025 to go)" in line and "silver to rank 6 (0.9: in it)" in line, line
    table = pd.read_csv(root / "data" / "runs" / COMP / "leaderboard.csv")
    assert table.loc[table["experiment"] == "tiny", "public_rank"].tolist() == [6]


@pytest.mark.parametrize(("teams", "zones"), [(30, (3, 6, 12)), (200, (10, 40, 80)), (500, (11, 50, 100)),
                                              (2000, (14, 100, 200))])  # fmt: skip
def test_medal_zones_follow_kaggles_rules(teams: int, zones: tuple[int, int, int]) -> None:
    from pipeline.kaggle.leaderboard import medal_zones

    assert tuple(medal_zones(teams).values()) == zones


# weights as a Kaggle Model ---------------------------------------------------------------------------------------


@pytest.fixture
def model_push(tmp_path: Path, fake_kaggle: FakeKaggle) -> Pipeline:
    root = tmp_path / "project"
    write_bundle(root, model=True)  # the weights in kaggle-bundle/model/, as kaggle-bundle MODEL=1 writes them
    fake_kaggle.add_competition(COMP, code_only=True)
    return pusher(root, fake_kaggle, tmp_path)


WEIGHTS = {name: data for name, data in FILES.items() if name.endswith(".safetensors")}


@pytest.mark.slow  # several CLI runs in subprocesses
def test_weights_travel_as_a_pinned_kaggle_model_and_the_kernel_finds_them_where_kaggle_mounts_them(
    model_push: Pipeline, fake_kaggle: FakeKaggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(model_push("kaggle-push", "--config", CONFIG, "--weights", "model"))

    owner, slug, framework, instance = MODEL.split("/")
    assert fake_kaggle.calls("GetModelInstance") and fake_kaggle.calls("CreateModel")  # 403 first: not created yet
    assert fake_kaggle.models[f"{owner}/{slug}"].instances[f"pytorch/{instance}"] == [WEIGHTS]  # metadata not uploaded
    assert not set(WEIGHTS) & set(fake_kaggle.datasets[DATASET].versions[0])  # code, config, OOF: the dataset
    saved = fake_kaggle.kernels[KERNEL][0]
    assert saved["modelDataSources"] == [f"{MODEL}/1"] and saved["datasetDataSources"] == [f"{DATASET}/1"]
    assert pushed_record(model_push.root)["model"]["version"] == 1

    ok(model_push("kaggle-push", "--config", CONFIG))  # unchanged: neither uploaded again, both checked again
    assert (
        len(fake_kaggle.calls("CreateModelInstanceVersion")) == 0 and len(fake_kaggle.calls("CreateModelInstance")) == 1
    )
    assert len(fake_kaggle.calls("ListModelInstanceVersionFiles")) == 2
    (weights := model_push.root / "data/runs/toy/tiny/kaggle-bundle/model/fold0.safetensors").write_bytes(b"x" * 10)
    ok(model_push("kaggle-push", "--config", CONFIG))  # retrained: a new version of the instance, pinned
    assert fake_kaggle.calls("CreateModelInstanceVersion")[0].json()["framework"] == "MODEL_FRAMEWORK_PY_TORCH"
    assert fake_kaggle.kernels[KERNEL][-1]["modelDataSources"] == [f"{MODEL}/2"]

    # The Kernel: the dataset and the pinned Model version mounted as Kaggle mounts them; kernel.py finds both.
    from pipeline.kaggle import kernel as kernel_script

    kaggle_input = tmp_path / "kaggle-input"
    bundle = fake_kaggle.mount_dataset(fake_kaggle.kernels[KERNEL][-1]["datasetDataSources"][0], kaggle_input)
    mounted = fake_kaggle.mount_model(f"{MODEL}/2", kaggle_input)
    assert mounted == kaggle_input / slug / "pytorch" / instance / "2"
    fake_kaggle.mount_model(f"{MODEL}/1", kaggle_input)  # an older version mounted too: not the one to read
    monkeypatch.setattr(kernel_script, "INPUT", kaggle_input)
    assert kernel_script.find_bundle("toy-tiny-bundle") == bundle
    manifest = json.loads((bundle / "bundle.json").read_text())
    view = kernel_script.with_model_weights(bundle, manifest)
    assert (view / "fold0.safetensors").read_bytes() == weights.read_bytes()  # version 2's, not version 1's
    assert (view / "folds.csv").read_bytes() == FILES["folds.csv"] and (view / "bundle.json").is_file()


@pytest.mark.slow  # several CLI runs in subprocesses
def test_a_dropped_weight_upload_is_named_and_the_kernel_is_not_pushed(
    model_push: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.fail_uploads = {"fold1.safetensors"}  # the client gives up on it and creates the version without it

    user_error(model_push("kaggle-push", "--config", CONFIG), MODEL, "version 1", "fold1.safetensors",
               "nothing is recorded as uploaded")  # fmt: skip
    assert "model" not in pushed_record(model_push.root) and KERNEL not in fake_kaggle.kernels
    assert not fake_kaggle.calls("CreateDataset")  # the weights go first: nothing else was uploaded

    fake_kaggle.fail_uploads = set()
    ok(model_push("kaggle-push", "--config", CONFIG))  # every weight file again, as version 2
    owner, slug, _, instance = MODEL.split("/")
    assert fake_kaggle.models[f"{owner}/{slug}"].instances[f"pytorch/{instance}"][1] == WEIGHTS
    assert fake_kaggle.kernels[KERNEL][0]["modelDataSources"] == [f"{MODEL}/2"]


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_a_model_flag_on_a_dataset_bundle_asks_for_a_rebuild(push: Pipeline, fake_kaggle: FakeKaggle) -> None:
    user_error(push("kaggle-push", "--config", CONFIG, "--weights", "model"), "carries its weights in the dataset",
               "make kaggle-bundle CONFIG=configs/toy/tiny.yaml MODEL=1")  # fmt: skip
    assert not fake_kaggle.calls()


def test_a_kernel_without_the_model_mounted_says_what_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kaggle import kernel as kernel_script

    monkeypatch.setattr(kernel_script, "INPUT", tmp_path)
    manifest = {"weights_model": {"instance": MODEL, "files": ["fold0.safetensors"]}}
    with pytest.raises(SystemExit, match=r"error: the bundle's weights \(Kaggle Model .*model_sources"):
        kernel_script.with_model_weights(tmp_path, manifest)
