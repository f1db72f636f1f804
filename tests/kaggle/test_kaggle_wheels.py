"""make kaggle-wheels: a compiled wheel no index has for the Kernel's Python is built on Kaggle itself, by a notebook
with internet on whose output the inference kernel mounts (kernel_sources). The notebook is pushed through the real
kaggle client to tests/helpers/fake_kaggle.py; its script runs here against a local wheel folder instead of PyPI."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from helpers.fake_kaggle import FakeKaggle
from helpers.kaggle_bundle import COMP, CONFIG, USER, write_bundle
from helpers.kaggle_env import pusher

pytest_plugins = ["helpers.kaggle_env"]
if TYPE_CHECKING:
    from helpers.kaggle_env import Pipeline

NOTEBOOK = f"{USER}/toy-py312-wheels"
WANTED = "pillow-simd==9.0.0.post1"
BUILT = "pillow_simd-9.0.0.post1-cp312-cp312-linux_x86_64.whl"


@pytest.fixture
def project(tmp_path: Path, fake_kaggle: FakeKaggle) -> Pipeline:
    root = tmp_path / "project"
    write_bundle(root)  # the competition's configs
    return pusher(root, fake_kaggle, tmp_path)


def record(root: Path) -> Path:
    return root / "data" / "runs" / COMP / "kaggle-wheels" / "kaggle-wheels.json"


@pytest.mark.slow  # a CLI run in a subprocess, polling the notebook's run
def test_kaggle_wheels_pushes_a_notebook_with_internet_that_builds_the_wheels_and_checks_its_output(
    project: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.kernel_output_name, fake_kaggle.kernel_output = BUILT, b"a wheel"

    result = project("kaggle-wheels", "--config", CONFIG, "--packages", WANTED)
    assert result.returncode == 0, result.stderr
    saved = fake_kaggle.kernels[NOTEBOOK][0]
    assert (saved["enableInternet"], saved["enableGpu"], saved["kernelType"], saved["isPrivate"]) == (
        True, False, "script", True)  # fmt: skip
    assert f'REQUIREMENTS = ["{WANTED}"]' in saved["text"] and '"wheel", "--no-deps"' in saved["text"]
    compile(saved["text"], "kernel.py", "exec")
    written = json.loads(record(project.root).read_text())
    assert (written["kernel"], written["version"], written["requirements"], written["python"]) == (
        NOTEBOOK, 1, [WANTED], "3.12")  # fmt: skip
    assert written["wheels"] == [BUILT]


@pytest.mark.slow  # a CLI run in a subprocess, polling the notebook's run
def test_a_notebook_whose_output_lacks_a_wheel_is_an_error_and_records_nothing(
    project: Pipeline, fake_kaggle: FakeKaggle
) -> None:
    fake_kaggle.kernel_output_name = "something-else.txt"

    result = project("kaggle-wheels", "--config", CONFIG, "--packages", WANTED)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and NOTEBOOK in last and WANTED in last, last
    assert not record(project.root).exists()


def test_the_notebooks_script_pip_wheels_its_requirements_into_its_output(tmp_path: Path) -> None:
    from pipeline.kaggle import wheels
    from pipeline.kaggle.wheels_kernel import write_kernel

    links, output = tmp_path / "index", tmp_path / "working"
    links.mkdir()
    output.mkdir()
    wheels.repack_installed("six", links)  # the index the notebook reaches on Kaggle, here a local folder
    wanted = f"six=={importlib.metadata.version('six')}"
    write_kernel(tmp_path / "kernel", NOTEBOOK, "toy py312 wheels", [wanted])
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "KAGGLE_WORKING_ROOT": str(output)}

    result = subprocess.run([sys.executable, str(tmp_path / "kernel" / "kernel.py")], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name.split("-")[:2] for p in output.glob("*.whl")] == [["six", wanted.split("==")[1]]]
    meta = json.loads((tmp_path / "kernel" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is True and meta["enable_gpu"] is False and meta["id"] == NOTEBOOK


def test_kaggle_bundle_leaves_a_notebook_built_wheel_to_kernel_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.core.errors import UserError
    from pipeline.kaggle import bundle, bundle_assembly, wheels

    def unfetchable(name: str, dest: Path) -> Path:
        if name == "fastcomp":
            raise UserError("fastcomp 2.0 is compiled ... no wheel for Kaggle's platform")
        return (dest / f"{name}-1.0-py3-none-any.whl").resolve()

    monkeypatch.setattr(wheels, "runtime_requirements", lambda: ["fastcomp==2.0", "puremod"])
    monkeypatch.setattr(wheels, "build_package_wheel", lambda dest: dest / "kaggle_pipeline-0.1.0-py3-none-any.whl")
    monkeypatch.setattr(wheels, "bundled_distributions", lambda requirements: ["fastcomp", "puremod"])
    monkeypatch.setattr(wheels, "bundle_wheel", unfetchable)
    monkeypatch.setattr(wheels, "_distribution", lambda name: SimpleNamespace(version="2.0"))

    with pytest.raises(UserError, match=r"no wheel.*make kaggle-wheels CONFIG=\.\.\. PACKAGES=fastcomp==2\.0"):
        bundle_assembly.write_runtime(tmp_path)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path))
    place = tmp_path / "data" / "runs" / COMP / "kaggle-wheels"
    place.mkdir(parents=True)
    (place / "kaggle-wheels.json").write_text(json.dumps({"kernel": NOTEBOOK, "requirements": ["fastcomp==2.0"],
                                                           "python": "3.12"}))  # fmt: skip
    _, extras, entry = bundle.runtime_with_notebook(COMP, tmp_path)
    assert extras == ["puremod-1.0-py3-none-any.whl"]
    assert entry == {"kaggle_wheels": {"kernel": NOTEBOOK, "requirements": ["fastcomp==2.0"]}}

    cfg = SimpleNamespace(comp=COMP, exp="tiny")
    names = bundle_assembly.kaggle_names(COMP, "tiny", USER)
    (kernel := tmp_path / "kernel").mkdir()
    bundle.build_kernel(cfg, names, kernel, "t4x2", manifest=entry)
    assert json.loads((kernel / "kernel-metadata.json").read_text())["kernel_sources"] == [NOTEBOOK]
    monkeypatch.setenv("PIPELINE_KAGGLE_PYTHON", "3.13")  # Kaggle moved on: the notebook's wheels no longer fit
    assert bundle_assembly.wheels_notebook(COMP) is None


def test_the_kernel_installs_from_the_notebooks_mounted_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kaggle import kernel as kernel_script

    mounted = tmp_path / "notebooks" / USER / "toy-py312-wheels"  # how Kaggle mounts a kernel source's output
    mounted.mkdir(parents=True)
    (mounted / BUILT).write_bytes(b"a wheel")
    monkeypatch.setattr(kernel_script, "INPUT", tmp_path)
    assert kernel_script.find_notebook_output(NOTEBOOK) == mounted
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(kernel_script, "pip_install", lambda *args: calls.append(args) or 0)
    monkeypatch.setattr(kernel_script.importlib.metadata, "distribution", lambda name: SimpleNamespace(
        metadata={"Name": name}, version="1", locate_file=lambda _: "site"))  # fmt: skip
    manifest = {"requirements": "requirements.txt", "wheels": [], "kaggle_wheels": {"kernel": NOTEBOOK},
                "package": {"name": "kaggle-pipeline", "wheel": "kaggle_pipeline-0.1.0-py3-none-any.whl"}}  # fmt: skip
    kernel_script.install(tmp_path / "bundle", manifest)
    assert calls[0][:4] == ("--find-links", str(tmp_path / "bundle"), "--find-links", str(mounted))
    with pytest.raises(SystemExit, match="kernel_sources"):
        kernel_script.find_notebook_output(f"{USER}/not-mounted")
