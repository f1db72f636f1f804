"""kaggle-bundle and kaggle-push on a real tiny run (2 folds, 32 px, CPU).

The bundle is built once per module. It is installed offline (`pip --no-index`) into a fresh virtualenv that sees
this one's packages, as Kaggle's image would, except this package and the wheels the bundle ships; its kernel script
then runs there against simulated /kaggle/input and /kaggle/working folders and must write the submission the local
run wrote. kaggle-push runs the real kaggle client against tests/fake_kaggle.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from helpers.builders import in_project, tiny_experiment
from helpers.chain import STAGES, write_competition_yaml
from helpers.fake_kaggle import FakeKaggle
from helpers.kernel_venv import fresh_venv, kaggle_image, kernel_env
from pipeline.__main__ import main
from pipeline.core import paths
from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config
from pipeline.kaggle.bundle_assembly import kaggle_names, slugify
from pipeline.kaggle.wheels import _wheel_tag, canonical

pytest_plugins = ["helpers.kaggle_env"]
if TYPE_CHECKING:
    from helpers.kaggle_env import Pipeline

COMP, EXP, USER = "toy", "tiny", "fake-user"
DATASET, KERNEL = f"{USER}/toy-tiny-bundle", f"{USER}/toy-tiny-inference"
CONFIG = f"configs/{COMP}/{EXP}.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run of the `csv` layout and its bundle for USER."""
    root = tmp_path_factory.mktemp("bundled")
    with in_project(root):
        write_competition_yaml(root, "csv")
        tiny_experiment(root)
        for stage in STAGES:
            assert main([stage, "--config", CONFIG]) == 0, stage
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
    return root


@pytest.fixture
def dataset(project: Path) -> Path:
    return project / "data/runs/toy/tiny/kaggle-bundle/dataset"


@pytest.fixture
def kernel(project: Path) -> Path:
    return project / "data/runs/toy/tiny/kaggle-bundle/kernel"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_bundle_holds_weights_config_wheels_and_kernel(project: Path, dataset: Path, kernel: Path) -> None:
    manifest = json.loads((dataset / "bundle.json").read_text())
    wheels = sorted(p.name for p in dataset.glob("*.whl"))
    assert sorted(canonical(w.split("-")[0]) for w in wheels) == ["iterative-stratification", "kaggle-pipeline", "six"]
    assert sorted(manifest["wheels"] + [manifest["package"]["wheel"]]) == wheels
    assert sorted(p.name for p in dataset.iterdir() if p.suffix != ".whl") == sorted([
        "bundle.json", "competition.yaml", "tiny.yaml", "folds.csv", "requirements.txt", "dataset-metadata.json",
        "fold0.safetensors", "fold1.safetensors", "fold0.oof.csv", "fold1.oof.csv",
    ])  # fmt: skip
    run = project / "data/runs/toy/tiny"
    for k in (0, 1):
        assert (dataset / f"fold{k}.safetensors").read_bytes() == (run / f"fold{k}/model.safetensors").read_bytes()
    from safetensors import safe_open

    with safe_open(str(dataset / "fold0.safetensors"), framework="pt") as f:
        assert {"pretrained_cfg", "data_config", "classes", "fingerprint"} <= set(f.metadata())
    requirements = (dataset / "requirements.txt").read_text()
    assert "iterative-stratification" in requirements and "timm" in requirements and "kaggle" not in requirements

    # The bundled config reloads to the weights' fingerprint (predict checks it), without test labels.
    configs = project / "reloaded" / COMP
    configs.mkdir(parents=True, exist_ok=True)
    for name in ("competition.yaml", "tiny.yaml"):
        (configs / name).write_bytes((dataset / name).read_bytes())
    reloaded = load_config(configs / "tiny.yaml")
    assert fingerprint(reloaded, TRAINING_SECTIONS) == manifest["fingerprint"]
    assert reloaded.data.holdout is None and reloaded.device == "cpu"

    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["id"] == KERNEL and slugify(meta["title"]) == KERNEL.split("/")[1]
    assert meta["competition_sources"] == [COMP] and meta["dataset_sources"] == [DATASET]
    assert (meta["enable_internet"], meta["enable_gpu"], meta["kernel_type"], meta["language"]) == (
        False, False, "script", "python")  # fmt: skip
    assert meta["code_file"] == "kernel.py" and meta["is_private"] is True
    script = (kernel / "kernel.py").read_text()
    compile(script, "kernel.py", "exec")
    assert '"bundle": "toy-tiny-bundle"' in script
    data_meta = json.loads((dataset / "dataset-metadata.json").read_text())
    assert data_meta["id"] == DATASET and 6 <= len(data_meta["title"]) <= 50 and data_meta["licenses"]

    # Same run, same files: what lets kaggle-push skip an upload that would change nothing.
    before = {p.name: p.read_bytes() for p in dataset.iterdir()}
    with in_project(project):
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
    assert {p.name: p.read_bytes() for p in dataset.iterdir()} == before


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_bundle_installs_offline_and_its_kernel_writes_the_submission(
    project: Path, dataset: Path, kernel: Path, tmp_path: Path
) -> None:
    manifest = json.loads((dataset / "bundle.json").read_text())
    shipped = [canonical(w.split("-")[0]) for w in manifest["wheels"]]
    python = fresh_venv(tmp_path, kaggle_image(tmp_path, ["kaggle-pipeline", *shipped]))
    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    kaggle_input.mkdir(parents=True)
    working.mkdir()
    (kaggle_input / COMP).symlink_to(project / "data/raw" / COMP)  # the competition's files, as Kaggle mounts them
    (kaggle_input / "toy-tiny-bundle").symlink_to(dataset)  # the bundle, mounted as a dataset
    env = kernel_env(KAGGLE_INPUT_ROOT=str(kaggle_input), KAGGLE_WORKING_ROOT=str(working),
                    PIPELINE_ROOT=str(tmp_path / "kernel-work"), KAGGLE_KERNEL_RUN_TYPE="Batch")  # fmt: skip

    result = subprocess.run([str(python), str(kernel / "kernel.py")], cwd=working, env=env, capture_output=True,
                            text=True, timeout=400)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    venv = tmp_path / "venv"
    assert f"from {venv}" in output  # the pipeline the kernel ran is the bundle's wheel, installed in the venv
    site = next(line for line in output.splitlines() if "kaggle-pipeline 0.1.0 in" in line).split(" in ", 1)[1]
    assert site.startswith(str(venv))  # installed into the venv, not found in the image
    for name in ("iterative-stratification", "six"):  # the bundled wheels, installed there too
        assert f"{name} {importlib.metadata.version(name)} in {site}" in output, output
    assert "warning:" not in output  # the requirements resolved against the image + bundle, no fallback

    assert sorted(p.name for p in working.iterdir()) == ["submission.csv"]  # nothing else lands in the output
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    sample = pd.read_csv(project / "data/raw/toy/sample_submission.csv", dtype=str)
    assert list(submitted.columns) == list(sample.columns)
    assert list(submitted["id"]) == list(sample["id"])
    assert f"kernel: {len(sample)} test images decoded once for" in output  # not once per fold
    local = pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, local)  # same weights, same images, same TTA: the same answers

    where = subprocess.run([str(python), "-c", "import iterstrat, pipeline, six; print(pipeline.__file__, "
                            "iterstrat.__file__, six.__file__)"], cwd=tmp_path, env=kernel_env(),
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(path.startswith(str(venv)) for path in where), where


def pusher(root: Path, fake: FakeKaggle, tmp_path: Path) -> Pipeline:
    from helpers.kaggle_env import Pipeline, pipeline_env

    runner = Pipeline(root, pipeline_env(root, fake))
    runner.route_to(fake.url)
    runner.env["TMPDIR"] = str(tmp_path)  # the client keeps resumable-upload notes under $TMPDIR/.kaggle
    return runner


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_push_creates_the_dataset_then_versions_it_and_pushes_the_kernel(
    project: Path, dataset: Path, kernel: Path, fake_kaggle: FakeKaggle, tmp_path: Path
) -> None:
    fake_kaggle.add_competition(COMP)
    push = pusher(project, fake_kaggle, tmp_path)
    (project / "data/runs/toy/tiny/kaggle-push.json").unlink(missing_ok=True)

    first = push("kaggle-push", "--config", CONFIG)
    assert first.returncode == 0, first.stderr
    created = fake_kaggle.datasets[DATASET]
    assert (created.title, created.license, created.is_private) == ("toy tiny bundle", "CC0-1.0", True)
    uploaded = created.versions[0]
    assert sorted(uploaded) == sorted(p.name for p in dataset.iterdir() if p.name != "dataset-metadata.json")
    assert uploaded["fold1.safetensors"] == (dataset / "fold1.safetensors").read_bytes()
    (saved,) = fake_kaggle.kernels[KERNEL]
    assert saved["competitionDataSources"] == [COMP] and saved["datasetDataSources"] == [f"{DATASET}/1"]  # pinned
    assert (saved["enableInternet"], saved["kernelType"], saved["language"], saved["isPrivate"]) == (
        False, "script", "python", True)  # fmt: skip
    assert saved["text"] == (kernel / "kernel.py").read_text() and saved["newTitle"] == "toy tiny inference"
    assert f"-k {KERNEL} -f submission.csv -v 1" in first.stderr

    again = push("kaggle-push", "--config", CONFIG)  # nothing changed: the kernel is pushed, the files are not
    assert again.returncode == 0, again.stderr
    assert "not uploading them again" in again.stderr and len(created.versions) == 1
    assert len(fake_kaggle.kernels[KERNEL]) == 2

    (project / "data/runs/toy/tiny/kaggle-push.json").unlink()
    versioned = push("kaggle-push", "--config", CONFIG, "--message", "second try")
    assert versioned.returncode == 0, versioned.stderr
    assert len(created.versions) == 2 and created.notes[1] == "second try"
    (call,) = fake_kaggle.calls("CreateDatasetVersion")
    assert (call.json()["ownerSlug"], call.json()["datasetSlug"]) == (USER, "toy-tiny-bundle")
    assert fake_kaggle.kernels[KERNEL][-1]["datasetDataSources"] == [f"{DATASET}/2"]  # the version just uploaded


PUSH_FAILURES = {
    # case: (competitions the fake knows, environment change, words the error line must hold)
    "other-account": ([COMP], {"KAGGLE_USERNAME": "someone"}, ["belongs to Kaggle user 'fake-user'", "KAGGLE_USER="]),
    "no-competition": ([], {}, ["did not accept kernel", "competition source(s) ['toy']"]),
    "bad-key": ([COMP], {"KAGGLE_KEY": "wrong"}, ["401", "KAGGLE_USERNAME/KAGGLE_KEY"]),
}


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
@pytest.mark.parametrize("case", PUSH_FAILURES)
def test_push_failures_are_one_clear_line(project: Path, fake_kaggle: FakeKaggle, tmp_path: Path, case: str) -> None:
    competitions, env, needles = PUSH_FAILURES[case]
    for slug in competitions:
        fake_kaggle.add_competition(slug)
    push = pusher(project, fake_kaggle, tmp_path)
    push.env.update(env)
    result = push("kaggle-push", "--config", CONFIG)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last
    assert KERNEL not in fake_kaggle.kernels or case == "no-competition"


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["--set", "sample=12"], ["sample run", "drop SAMPLE"]),
        (["--set", "train.lr=0.5"], ["different config"]),
        (["--set", "ensemble.refit=true"], ["ensemble.refit", "folds only", "ensemble.refit=false"]),
        ([], ["--user", "KAGGLE_USERNAME"]),
    ],
)
def test_bundle_refuses_what_a_kernel_could_not_use(
    project: Path, capsys: pytest.CaptureFixture, overrides: list[str], needles: list[str]
) -> None:
    user = ["--user", USER] if "--user" not in needles else []
    with in_project(project), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(project / "home"))  # no credentials anywhere: nothing says who owns the bundle
        mp.setenv("KAGGLE_CONFIG_DIR", str(project / "kaggle-config"))
        capsys.readouterr()
        assert main(["kaggle-bundle", "--config", CONFIG, *user, *overrides]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last


@pytest.mark.parametrize("comp", ["toy", "plant-pathology-2021-fgvc8", "a" * 60, "x_y"])
def test_kaggle_names_fit_the_clients_limits(comp: str) -> None:
    names = kaggle_names(comp, "baseline", "me")
    for ref, title in ((names.dataset, names.dataset_title), (names.kernel, names.kernel_title)):
        slug = ref.split("/")[1]
        assert 6 <= len(title) <= 50 and 6 <= len(slug) <= 50 and slug == slugify(title), (ref, title)


def test_wheel_tags_compress_like_pip_names_them() -> None:
    assert _wheel_tag("Tag: py2-none-any\nTag: py3-none-any\n") == "py2.py3-none-any"
    assert _wheel_tag("Tag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64") == (
        "cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64"
    )


def test_kernel_finds_its_bundle_where_kaggle_mounts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kaggle import kernel as kernel_script

    monkeypatch.setattr(kernel_script, "INPUT", tmp_path)
    nested = tmp_path / "datasets" / USER / "toy-tiny-bundle"  # a mount one level deeper than /kaggle/input/<slug>
    nested.mkdir(parents=True)
    (nested / "bundle.json").write_text(json.dumps({"dataset": DATASET}))
    assert kernel_script.find_bundle("toy-tiny-bundle") == nested
    (tmp_path / "toy-tiny-bundle").mkdir()
    (tmp_path / "toy-tiny-bundle" / "bundle.json").write_text(json.dumps({"dataset": DATASET}))
    assert kernel_script.find_bundle("toy-tiny-bundle") == tmp_path / "toy-tiny-bundle"
    with pytest.raises(SystemExit, match="error: no bundle 'other-bundle'.*dataset_sources"):
        kernel_script.find_bundle("other-bundle")


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("mount", ["toy", "competitions/toy"])
def test_bundled_kernel_reads_the_competition_under_either_mount(
    project: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mount: str
) -> None:
    from pipeline.commands.kernel_predict import run_bundle

    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    (kaggle_input / mount).parent.mkdir(parents=True, exist_ok=True)
    working.mkdir(parents=True)
    (kaggle_input / mount).symlink_to(project / "data/raw" / COMP)
    bundle = kaggle_input / "datasets" / USER / "toy-tiny-bundle"  # today's dataset mount
    bundle.parent.mkdir(parents=True)
    bundle.symlink_to(dataset)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kernel-work"))
    monkeypatch.setattr(paths, "KAGGLE_INPUT", kaggle_input)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", working)

    assert run_bundle(bundle) == 0
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str))


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
def test_token_auth_takes_the_username_from_the_client(
    project: Path, dataset: Path, fake_kaggle: FakeKaggle, tmp_path: Path
) -> None:
    fake_kaggle.add_competition(COMP)
    fake_kaggle.token = "token-for-tests"
    push = pusher(project, fake_kaggle, tmp_path)
    push.env.pop("KAGGLE_KEY")
    push.env["KAGGLE_USERNAME"] = "someone"  # stale in the environment: the token's owner is what counts
    push.env["KAGGLE_API_TOKEN"] = fake_kaggle.token

    built = push("kaggle-bundle", "--config", CONFIG)
    assert built.returncode == 0, built.stderr
    assert json.loads((dataset / "bundle.json").read_text())["dataset"] == DATASET  # owned by the token's user
    pushed = push("kaggle-push", "--config", CONFIG, "--wait", "0")
    assert pushed.returncode == 0, pushed.stderr
    assert fake_kaggle.calls("IntrospectToken") and KERNEL in fake_kaggle.kernels


@pytest.mark.parametrize(
    ("device", "explicit", "env", "configured", "shape"),
    [
        ("auto", None, None, "", "NvidiaTeslaT4"),  # a GPU run asks for a T4 (x2), never whatever Kaggle picks
        ("cpu", None, None, "", None),
        ("auto", None, "l4", "", "NvidiaL4"),
        ("auto", "p100", "l4", "", "NvidiaTeslaP100"),  # the flag wins over the environment
        ("cuda", "none", None, "", None),
        ("cpu", "T4X2", None, "", "NvidiaTeslaT4"),
        ("auto", None, None, "l4", "NvidiaL4"),  # kaggle.accelerator in the config
        ("cpu", None, None, "t4x2", "NvidiaTeslaT4"),  # the config wins over the cpu default
        ("auto", None, "p100", "l4", "NvidiaTeslaP100"),  # the environment wins over the config
        ("auto", "none", "p100", "l4", None),  # the flag wins over both
    ],
)
def test_kernel_metadata_asks_for_the_chosen_accelerator(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, explicit: str | None,
    env: str | None, configured: str, shape: str | None,
) -> None:  # fmt: skip
    import dataclasses

    from pipeline.kaggle.bundle import build_kernel
    from pipeline.kaggle.bundle_assembly import choose_accelerator

    with in_project(project):
        cfg = dataclasses.replace(load_config(project / CONFIG), device=device)
    if env:
        monkeypatch.setenv("KAGGLE_ACCELERATOR", env)
    else:
        monkeypatch.delenv("KAGGLE_ACCELERATOR", raising=False)
    build_kernel(cfg, kaggle_names(COMP, EXP, USER), tmp_path, choose_accelerator(cfg, explicit, configured))
    meta = json.loads((tmp_path / "kernel-metadata.json").read_text())
    assert meta.get("machine_shape") == shape and meta["enable_gpu"] is (shape is not None)


def test_an_unknown_accelerator_is_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    with in_project(project):
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER, "--accelerator", "a100"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "t4x2, l4, p100, none" in last, last


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_bundle_report_plan_take_what_the_run_trained(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    import yaml

    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    experiment = copy / CONFIG
    values = yaml.safe_load(experiment.read_text())
    values["train"]["lr"] = 0.5  # the file now says something the run was not trained with (as after SET=...)
    experiment.write_text(yaml.safe_dump(values))
    with in_project(copy):
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
        bundled = yaml.safe_load((copy / "data/runs/toy/tiny/kaggle-bundle/dataset/tiny.yaml").read_text())
        assert bundled["train"]["lr"] != 0.5
        assert main(["plan", "--config", CONFIG]) == 0
        capsys.readouterr()
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER, "--set", "train.lr=0.5"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "different config" in last, last


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_push_waits_for_the_new_version_then_kaggle_submit_reaches_a_score(
    project: Path, fake_kaggle: FakeKaggle, tmp_path: Path
) -> None:
    fake_kaggle.add_competition(COMP, code_only=True, public_score="0.77700")
    fake_kaggle.dataset_version_lag = 2  # status READY, but GetDataset still shows the previous version twice
    push = pusher(project, fake_kaggle, tmp_path)
    (project / "data/runs/toy/tiny/kaggle-push.json").unlink(missing_ok=True)

    pushed = push("kaggle-push", "--config", CONFIG)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stderr.count("ready, but at version 0 (waiting for 1)") == 2
    order = [s.path.rsplit("/", 1)[-1] for s in fake_kaggle.calls() if s.path.endswith(("GetDataset", "SaveKernel"))]
    assert order[-2:] == ["GetDataset", "SaveKernel"] and order.count("GetDataset") == 3
    record = json.loads((project / "data/runs/toy/tiny/kaggle-push.json").read_text())
    assert (record["kernel"], record["kernel_version"], record["version"]) == (KERNEL, 1, 1)

    submitted = push("kaggle-submit", "--config", CONFIG)
    assert submitted.returncode == 0, submitted.stderr
    assert "kernel fake-user/toy-tiny-inference: queued" in submitted.stderr
    assert "  | log line 0" in submitted.stderr and "  | log line 29" in submitted.stderr  # the log, streamed
    assert submitted.stderr.count("  | log line 7") == 1
    (code,) = fake_kaggle.calls("CreateCodeSubmission")
    body = code.json()
    assert (body["kernelOwner"], body["kernelSlug"], body["kernelVersion"], body["fileName"]) == (
        USER, "toy-tiny-inference", 1, "submission.csv")  # fmt: skip
    assert body["submissionDescription"].startswith("tiny | CV ")
    assert "scored 0.77700" in submitted.stdout


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_kaggle_submit_shows_a_failed_runs_log(project: Path, fake_kaggle: FakeKaggle, tmp_path: Path) -> None:
    fake_kaggle.add_competition(COMP, code_only=True)
    fake_kaggle.kernel_outcome = "ERROR"
    push = pusher(project, fake_kaggle, tmp_path)
    assert push("kaggle-push", "--config", CONFIG).returncode == 0

    failed = push("kaggle-submit", "--config", CONFIG, "--no-follow")  # the log's tail only, not its stream
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: kernel fake-user/toy-tiny-inference") and "ended error" in last, last
    assert "Your notebook hit an error" in last and "kaggle-kernel-output" in last
    assert "  | error: boom" in failed.stderr and "  | log line 29" in failed.stderr  # the log's last lines
    assert "  | log line 5" not in failed.stderr
    assert fake_kaggle.calls("ListKernelSessionOutput") and fake_kaggle.calls("CreateCodeSubmission") == []


def _installed(site: Path, name: str, version: str, tag: str) -> None:
    """A distribution installed into `site` as pip would leave it (a module, METADATA, WHEEL, RECORD)."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text("VALUE = 1\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{info.name}/METADATA,,\n{info.name}/WHEEL,,\n"
                                 f"{info.name}/RECORD,,\n")  # fmt: skip


def test_only_pure_wheels_are_repacked_compiled_ones_are_fetched_for_kaggle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    from pipeline.core.errors import UserError
    from pipeline.kaggle import wheels

    site, dest, index = tmp_path / "site", tmp_path / "dest", tmp_path / "index"
    for folder in (site, dest, index):
        folder.mkdir()
    _installed(site, "purepkg", "1.0", "py3-none-any")
    _installed(site, "fastpkg", "2.0", "cp311-cp311-linux_x86_64")  # built for this machine
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip's own configuration decides where wheels come from
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))

    assert wheels.bundle_wheel("purepkg", dest).name == "purepkg-1.0-py3-none-any.whl"
    with pytest.raises(
        UserError,
        match=r"fastpkg 2\.0 is compiled.*pip download .*--platform manylinux2014_x86_64"
        r".*--python-version 3\.12.*utility notebook with internet on.*kernel_sources",
    ):
        wheels.bundle_wheel("fastpkg", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["purepkg-1.0-py3-none-any.whl"]  # nothing of this machine's

    for python in ("cp311", "cp312"):  # what the index holds: the wheel for Kaggle's Python, and another
        with zipfile.ZipFile(index / f"fastpkg-2.0-{python}-{python}-manylinux2014_x86_64.whl", "w") as wheel:
            wheel.writestr("fastpkg/__init__.py", f"VALUE = '{python}'\n")
            wheel.writestr("fastpkg-2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fastpkg\nVersion: 2.0\n")
            wheel.writestr("fastpkg-2.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
                           f"Tag: {python}-{python}-manylinux2014_x86_64\n")  # fmt: skip
            wheel.writestr("fastpkg-2.0.dist-info/RECORD", "")
    kaggles = index / "fastpkg-2.0-cp312-cp312-manylinux2014_x86_64.whl"  # Kaggle's image runs CPython 3.12
    fetched = wheels.bundle_wheel("fastpkg", dest)
    assert fetched.name == kaggles.name and fetched.read_bytes() == kaggles.read_bytes()
    monkeypatch.setenv("PIPELINE_KAGGLE_PYTHON", "3.11")  # the one setting, when Kaggle's image moves
    fetched.unlink()
    assert wheels.bundle_wheel("fastpkg", dest).name == "fastpkg-2.0-cp311-cp311-manylinux2014_x86_64.whl"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_custom_metric_module_ships_in_the_bundle_and_the_kernel_imports_it(project: Path, tmp_path: Path) -> None:
    import shutil

    import yaml

    root = tmp_path / "home"
    shutil.copytree(project, root, symlinks=True)
    package = root / "configs" / "bundledmetrics"  # a package in configs/, as the README allows
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "agree.py").write_text(
        "import numpy as np\n\n\ndef score(targets, labels):\n    return float(np.mean(targets == labels))\n"
    )
    for config in (root / "configs" / COMP / "competition.yaml", root / "data/runs/toy/tiny/config.yaml"):
        values = yaml.safe_load(config.read_text())  # as if the run had been trained with the custom metric
        values["metric"] = {"function": "bundledmetrics.agree:score", "higher_is_better": True, "needs": "labels"}
        config.write_text(yaml.safe_dump(values))
    (root / "data/runs/toy/tiny/scores.json").unlink()
    with in_project(root):
        for stage in ("ensemble", "submission"):
            assert main([stage, "--config", CONFIG]) == 0, stage
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
    sys.modules.pop("bundledmetrics.agree", None)
    sys.modules.pop("bundledmetrics", None)
    bundle = root / "data/runs/toy/tiny/kaggle-bundle/dataset"
    assert json.loads((bundle / "bundle.json").read_text())["metric_modules"] == {
        "metric-module--bundledmetrics--agree.py": "bundledmetrics/agree.py",
        "metric-module--bundledmetrics--__init__.py": "bundledmetrics/__init__.py",
    }

    kaggle_input, working, elsewhere = tmp_path / "input", tmp_path / "working", tmp_path / "elsewhere"
    for folder in (kaggle_input, working, elsewhere):
        folder.mkdir()
    (kaggle_input / COMP).symlink_to(root / "data/raw" / COMP)
    env = kernel_env(PIPELINE_ROOT=str(tmp_path / "kernel-work"), KAGGLE_INPUT_ROOT=str(kaggle_input),
                    KAGGLE_WORKING_ROOT=str(working), PYTHONPATH=os.environ.get("PYTHONPATH", ""))  # fmt: skip
    script = "import sys; from pathlib import Path; from pipeline.commands.kernel_predict import run_bundle; "
    script += "sys.exit(run_bundle(Path(sys.argv[1])))"
    done = subprocess.run([sys.executable, "-c", script, str(bundle)], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip  # a fresh process: nothing imported from home
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(
        pd.read_csv(working / "submission.csv", dtype=str), pd.read_csv(root / "submissions/toy/tiny.csv", dtype=str)
    )


def test_kaggle_accelerator_config_key_reaches_the_kernel_metadata(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from pipeline.core.config import ACCELERATORS as CONFIG_ACCELERATORS
    from pipeline.kaggle.bundle_assembly import ACCELERATORS

    assert set(CONFIG_ACCELERATORS) == set(ACCELERATORS)  # the config validates what the bundle maps
    root = tmp_path / "home"
    shutil.copytree(project, root, symlinks=True)
    experiment = root / CONFIG
    original = experiment.read_text()
    monkeypatch.delenv("KAGGLE_ACCELERATOR", raising=False)
    with in_project(root):
        experiment.write_text(original + "kaggle:\n  accelerator: l4\n")  # added after training: still honoured
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
        meta = json.loads((root / "data/runs/toy/tiny/kaggle-bundle/kernel/kernel-metadata.json").read_text())
        assert meta["machine_shape"] == "NvidiaL4"
        experiment.write_text(original + "kaggle:\n  accelerator: a100\n")
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "kaggle.accelerator" in last and "t4x2, l4, p100, none" in last, last


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_weights_as_a_kaggle_model_leave_the_dataset_and_the_kernel_predicts_from_the_models_mount(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from pipeline.commands.kernel_predict import run_bundle
    from pipeline.kaggle import kernel as kernel_script

    root = tmp_path / "home"
    shutil.copytree(project, root, symlinks=True)
    with in_project(root):
        (root / CONFIG).write_text((root / CONFIG).read_text() + "kaggle:\n  weights: model\n")  # after training
        assert main(["kaggle-bundle", "--config", CONFIG, "--user", USER]) == 0
    bundle = root / "data/runs/toy/tiny/kaggle-bundle"
    manifest = json.loads((bundle / "dataset/bundle.json").read_text())
    weights = sorted(p.name for p in (bundle / "model").glob("*.safetensors"))
    assert weights == ["fold0.safetensors", "fold1.safetensors"] == manifest["weights_model"]["files"]
    assert manifest["weights_model"]["instance"] == f"{USER}/toy-tiny-weights/pyTorch/default"
    assert not list((bundle / "dataset").glob("*.safetensors"))
    assert {"model-metadata.json", "model-instance-metadata.json"} <= {p.name for p in (bundle / "model").iterdir()}

    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    (kaggle_input / "datasets" / USER).mkdir(parents=True)
    (kaggle_input / "datasets" / USER / "toy-tiny-bundle").symlink_to(bundle / "dataset")
    shutil.copytree(bundle / "model", kaggle_input / "toy-tiny-weights/pytorch/default/1")  # the Model's mount
    (kaggle_input / COMP).symlink_to(project / "data/raw" / COMP)
    working.mkdir(parents=True)
    monkeypatch.setattr(kernel_script, "INPUT", kaggle_input)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kernel-work"))
    monkeypatch.setattr(paths, "KAGGLE_INPUT", kaggle_input)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", working)

    view = kernel_script.with_model_weights(kernel_script.find_bundle("toy-tiny-bundle"), manifest)
    assert run_bundle(view) == 0
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str))
