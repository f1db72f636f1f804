"""make kaggle-bundle BLEND=<name>: a whole blend in the Kaggle Kernel, on a real tiny competition.

Two members with their own configs (image size, TTA views) are trained, predicted, ensembled and blended once per
module. The blend's bundle is then run by the Kernel's own code (pipeline.commands.kernel_predict.run_blend) against
simulated /kaggle/input and /kaggle/working folders: it must blend to the local blend's probabilities and write
its submission. Refusals and kaggle-push run on copies or against tests/helpers/fake_kaggle.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import pipeline.inference.blend as blend_module
from helpers.builders import in_project, tiny_experiment, write_competition_config
from helpers.fake_kaggle import FakeKaggle
from pipeline.__main__ import main
from pipeline.core import paths

pytest_plugins = ["helpers.kaggle_env"]
STAGES = ("folds", "train", "predict", "ensemble", "submission")

COMP, USER = "toy", "fake-user"
# Each member its own image size and views (and a high learning rate, so probabilities move away from uniform).
# train.cache on (the default): at home predict reads the resized-image cache, the Kernel has none and resizes each
# image on read exactly as the cache would (pipeline.data.cache.ResizeOnRead), so the probabilities agree.
MEMBERS = {"tiny": {"train": {}},
           "wide": {"train": {"image_size": 40, "lr": 0.05, "epochs": 2},
                    "tta": {"views": ["identity"]}}}  # fmt: skip
TOLERANCE = 1e-5  # the Kernel re-predicts every member: the same weights on the same images, within float noise
FORCED = [0.7, 0.3]  # the `forced` blend's weights: a kernel that ignored them would blend 0.5/0.5
BLENDS = {"forced": "fitted", "geo": "geometric"}


def write_blend(root: Path, name: str, method: str) -> None:
    (root / f"configs/{COMP}/blend.yaml").write_text(yaml.safe_dump({"name": name, "experiments": list(MEMBERS),
                                                                     "method": method}))  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished members, the blends `geo` (geometric) and `forced` (fitted, weights forced to FORCED so the
    test can tell them from the mean), and the bundle of each."""
    root = tmp_path_factory.mktemp("blend-bundled")
    with in_project(root), pytest.MonkeyPatch.context() as mp:
        write_competition_config(root, "csv")
        for exp, sections in MEMBERS.items():
            tiny_experiment(root, name=exp, **sections)
            for stage in STAGES:
                assert main([stage, "--config", f"configs/{COMP}/{exp}.yaml"]) == 0, (exp, stage)
        real = blend_module.choose_blend

        def forced(*args: object, **kwargs: object) -> tuple[dict, str, np.ndarray]:
            result, _, _ = real(*args, **kwargs)
            return {**result, "chosen": "fitted"}, "mean", np.array(FORCED)

        for name, method in BLENDS.items():
            write_blend(root, name, method)
            mp.setattr(blend_module, "choose_blend", forced if name == "forced" else real)
            assert main(["blend", "--comp", COMP]) == 0, name
            assert main(["kaggle-bundle", "--comp", COMP, "--blend", name, "--user", USER]) == 0, name
    return root


def dataset_of(root: Path, name: str) -> Path:
    return root / f"data/runs/{COMP}/blend/{name}/kaggle-bundle/dataset"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_blend_bundle_holds_each_member_bundle_and_the_blends_weights(project: Path) -> None:
    dataset = dataset_of(project, "forced")
    manifest = json.loads((dataset / "bundle.json").read_text())
    scores = json.loads((project / f"data/runs/{COMP}/blend/forced/scores.json").read_text())
    assert manifest["kind"] == "blend" and [m["exp"] for m in manifest["members"]] == list(MEMBERS)
    assert manifest["weights"] == scores["weights"] == dict(zip(MEMBERS, FORCED, strict=True))
    assert manifest["combine"] == scores["combine"] == "mean"
    for exp in MEMBERS:
        member = json.loads((dataset / f"{exp}--bundle.json").read_text())
        assert member["exp"] == exp and member["n_folds"] == 2  # the single-experiment manifest, unchanged
        for fold in member["folds"]:
            shipped = (dataset / f"{exp}--{fold['weights']}").read_bytes()
            assert shipped == (project / f"data/runs/{COMP}/{exp}/fold{fold['fold']}/model.safetensors").read_bytes()
        views = yaml.safe_load((dataset / f"{exp}--{exp}.yaml").read_text())["tta"]["views"]
        assert views == MEMBERS[exp].get("tta", {}).get("views", ["identity", "hflip"])
    assert len(list(dataset.glob("kaggle_pipeline-*.whl"))) == 1  # one set of wheels for every member
    kernel = dataset.parent / "kernel"
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == [f"{USER}/toy-blend-forced-bundle"] and meta["competition_sources"] == [COMP]
    assert '"bundle": "toy-blend-forced-bundle"' in (kernel / "kernel.py").read_text()


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("name", list(BLENDS))
def test_the_kernels_blend_equals_the_local_blend(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from pipeline.commands.kernel_predict import run_blend

    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    (kaggle_input / "competitions").mkdir(parents=True)
    working.mkdir(parents=True)
    (kaggle_input / "competitions" / COMP).symlink_to(project / "data/raw" / COMP)
    bundle = kaggle_input / f"toy-blend-{name}-bundle"
    bundle.symlink_to(dataset_of(project, name))
    kernel_root = tmp_path / "kernel-work"
    monkeypatch.setenv("PIPELINE_ROOT", str(kernel_root))
    monkeypatch.setattr(paths, "KAGGLE_INPUT", kaggle_input)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", working)

    assert run_blend(bundle) == 0
    local = pd.read_csv(project / f"data/runs/{COMP}/blend/{name}/test.csv")
    remote = pd.read_csv(kernel_root / f"data/runs/{COMP}/blend/{name}/test.csv")
    assert list(remote["id"]) == list(local["id"])
    np.testing.assert_allclose(remote.iloc[:, 1:].to_numpy(), local.iloc[:, 1:].to_numpy(), rtol=0, atol=TOLERANCE)
    if name == "forced":  # the weights matter: the plain mean of the members is further away than the tolerance
        members = [pd.read_csv(project / f"data/runs/{COMP}/{exp}/test.csv").iloc[:, 1:].to_numpy() for exp in MEMBERS]
        assert np.abs(np.mean(members, axis=0) - local.iloc[:, 1:].to_numpy()).max() > 10 * TOLERANCE
    assert sorted(p.name for p in working.iterdir()) == ["submission.csv"]
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, pd.read_csv(project / f"submissions/{COMP}/{name}.csv", dtype=str))


def _resolved(root: Path, exp: str, section: str, key: str, value: object) -> None:
    """Change what the member's run records it was trained under (as a run trained with SET=... would)."""
    path = root / f"data/runs/{COMP}/{exp}/config.yaml"
    values = yaml.safe_load(path.read_text())
    (values.setdefault(section, {}) if section else values)[key] = value
    path.write_text(yaml.safe_dump(values))


def _touch_test(root: Path, exp: str, _section: str, _key: str, _value: object) -> None:
    """The member's test.csv rewritten after the blend (as a re-run of predict + ensemble would)."""
    path = root / f"data/runs/{COMP}/{exp}/test.csv"
    frame = pd.read_csv(path)
    frame.loc[0, frame.columns[1]] = float(frame.loc[0, frame.columns[1]]) + 1e-3
    frame.to_csv(path, index=False)


def _blend_yaml(root: Path, _exp: str, _section: str, _key: str, value: object) -> None:
    write_blend(root, "forced", str(value))


REFUSALS = {
    # case: (blend name, how the copy is changed, words the error line must hold)
    "no-blend": ("nope", None, ["blend/nope/scores.json not found", "make blend COMP=toy"]),
    "member-changed": ("forced", (_touch_test, "wide", "", "", None), ["stale", "wide/test.csv changed", "make blend"]),
    "blend-yaml-changed": ("forced", (_blend_yaml, "", "", "", "mean"), ["stale", "method 'mean'", "make blend"]),
    "refit-member": ("forced", (_resolved, "wide", "ensemble", "refit", True),
                     ["member wide has ensemble.refit", "ensemble.refit: false", "make blend"]),
    "other-competition": ("forced", (_resolved, "wide", "", "metric", "log_loss"),
                          ["members tiny and wide", "different competition settings (metric)"]),
    "fingerprint": ("geo", (_resolved, "tiny", "train", "lr", 0.5),
                    ["tiny/fold0/model.safetensors", "different config"]),
}  # fmt: skip


@pytest.mark.slow  # CLI subprocesses against the fake server or Make: seconds each
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_blend_the_kernel_could_not_redo_is_refused(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    name, change, needles = REFUSALS[case]
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    if change:
        change[0](copy, *change[1:])
    with in_project(copy):
        capsys.readouterr()
        assert main(["kaggle-bundle", "--comp", COMP, "--blend", name, "--user", USER]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and all(n in err[-1] for n in needles), err[-1]
    assert not any("Traceback" in line for line in err)
    assert not list((copy / f"data/runs/{COMP}/blend").glob("*/.kaggle-bundle.building"))  # nothing half-built


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_push_and_submit_a_blend_bundle(project: Path, fake_kaggle: FakeKaggle, tmp_path: Path) -> None:
    fake_kaggle.add_competition(COMP, code_only=True, public_score="0.81000")
    from helpers.kaggle_env import pusher

    push = pusher(project, fake_kaggle, tmp_path)
    dataset, kernel = f"{USER}/toy-blend-forced-bundle", f"{USER}/toy-blend-forced-inference"

    pushed = push("kaggle-push", "--comp", COMP, "--blend", "forced")
    assert pushed.returncode == 0, pushed.stderr
    uploaded = fake_kaggle.datasets[dataset].versions[0]
    assert {"bundle.json", "tiny--bundle.json", "wide--bundle.json", "wide--fold1.safetensors"} <= set(uploaded)
    assert uploaded["bundle.json"] == (dataset_of(project, "forced") / "bundle.json").read_bytes()
    (saved,) = fake_kaggle.kernels[kernel]
    assert saved["datasetDataSources"] == [f"{dataset}/1"] and saved["competitionDataSources"] == [COMP]  # pinned
    record = json.loads((project / f"data/runs/{COMP}/blend/forced/kaggle-push.json").read_text())
    assert (record["dataset"], record["kernel"]) == (dataset, kernel)
    assert "make kaggle-submit COMP=toy BLEND=forced" in pushed.stderr

    submitted = push("kaggle-submit", "--comp", COMP, "--blend", "forced")
    assert submitted.returncode == 0, submitted.stderr
    (code,) = fake_kaggle.calls("CreateCodeSubmission")
    assert (code.json()["kernelSlug"], code.json()["fileName"]) == ("toy-blend-forced-inference", "submission.csv")
    assert code.json()["submissionDescription"].startswith("forced | CV ")
    assert "scored 0.81000" in submitted.stdout


def test_plan_of_a_blend_sums_its_members_and_orders_drops_by_gain_per_second(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.core.config import load_config
    from pipeline.core.metrics import goodness
    from pipeline.inference.view_scores import compute_view_oof
    from pipeline.reporting.planner import make_blend_plan, make_plan

    scores = json.loads((project / f"data/runs/{COMP}/blend/forced/scores.json").read_text())
    with in_project(project):
        configs = {exp: load_config(f"configs/{COMP}/{exp}.yaml") for exp in MEMBERS}
        before = make_blend_plan(COMP, "forced", limit_s=1e-3)  # a limit nothing fits in
        compute_view_oof(configs["tiny"], ["identity", "hflip"])  # now tiny's views have measured OOF gains
        plan = make_blend_plan(COMP, "forced", limit_s=1e-3)
        singles = {exp: make_plan(cfg, 3600).table.iloc[0]["total"] for exp, cfg in configs.items()}
        capsys.readouterr()
        assert main(["plan", "--comp", COMP, "--blend", "forced", "--time-limit", "0.001s"]) == 0
    printed = capsys.readouterr().out

    assert {m.exp: m.seconds for m in plan.members} == pytest.approx(singles)  # each its own folds, views, speed
    assert plan.total == pytest.approx(sum(singles.values())) and not plan.fits
    assert [m.views for m in plan.members] == [["identity", "hflip"], ["identity"]]
    unknown = [d.what for d in before.drops if d.gain is None]
    assert unknown == ["view identity of tiny", "view hflip of tiny"] and before.drops[-1].gain is None
    assert all(d.gain is not None for d in plan.drops) and len(plan.drops) == 4  # 2 experiments + tiny's 2 views
    rates = [d.per_second for d in plan.drops]
    assert rates == sorted(rates)  # least OOF gain per second first
    wide = next(d for d in plan.drops if d.what == "experiment wide")  # without wide, the blend is tiny alone
    metric = scores["metric"]
    assert wide.gain == pytest.approx(goodness(metric, scores["cv"]) - goodness(metric, scores["experiments"]["tiny"]))
    assert "DOES NOT FIT" in printed and "to fit, drop in this order" in printed
    assert printed.index(f"1. {plan.drops[0].what}") < printed.index(f"4. {plan.drops[3].what}")


def test_the_kernel_script_hands_a_blend_bundle_to_run_blend(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kernel.py runs the pipeline's own `kernel-predict` command on the bundle it found; that command hands a blend
    bundle to run_blend and returns its status."""
    import sys

    from pipeline.commands import kernel_predict
    from pipeline.commands.cli import main
    from pipeline.kaggle import kernel as kernel_script

    bundle = tmp_path / "toy-blend-geo-bundle"
    bundle.symlink_to(dataset_of(project, "geo"))
    monkeypatch.setattr(kernel_script, "INPUT", tmp_path)
    monkeypatch.setattr(kernel_script, "SETTINGS", {"bundle": "toy-blend-geo-bundle"})
    monkeypatch.setattr(kernel_script, "install", lambda bundle, manifest: None)  # the wheels: tested in test_bundle
    commands: list[list[str]] = []
    monkeypatch.setattr(kernel_script.subprocess, "call", lambda command: commands.append(command) or 0)
    assert kernel_script.main() == 0
    assert commands == [[sys.executable, "-m", "pipeline", "kernel-predict", "--bundle", str(bundle)]]

    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kernel-work"))
    called = []
    monkeypatch.setattr(kernel_predict, "run_blend", lambda bundle: called.append(("blend", bundle)) or 0)
    monkeypatch.setattr(kernel_predict, "run_bundle", lambda bundle: called.append(("single", bundle)) or 0)
    assert main(commands[0][3:]) == 0
    assert called == [("blend", bundle)]
    monkeypatch.setattr(kernel_predict, "run_blend", lambda bundle: 2)
    with pytest.raises(SystemExit) as stopped:
        main(commands[0][3:])
    assert stopped.value.code == 2


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_make_passes_blend_to_the_kaggle_targets_and_plan(tmp_path: Path) -> None:
    import subprocess

    from helpers.builders import REPO

    for target in ("kaggle-bundle", "kaggle-push", "kaggle-submit", "plan"):
        result = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), target, "COMP=toy", "BLEND=duo"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"-m pipeline {target} --comp toy --blend duo" in result.stdout, result.stdout
    single = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "kaggle-push", "CONFIG=configs/toy/a.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "-m pipeline kaggle-push --config configs/toy/a.yaml" in single.stdout and "--blend" not in single.stdout


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_blends_weights_travel_as_one_kaggle_model_and_the_kernel_blends_from_its_mount(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.commands.kernel_predict import run_blend
    from pipeline.kaggle import kernel as kernel_script

    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    with in_project(copy):
        assert main(["kaggle-bundle", "--comp", COMP, "--blend", "forced", "--user", USER, "--weights", "model"]) == 0
    bundle = copy / f"data/runs/{COMP}/blend/forced/kaggle-bundle"
    manifest = json.loads((bundle / "dataset/bundle.json").read_text())
    model = manifest["weights_model"]
    assert model["instance"] == f"{USER}/toy-blend-forced-weights/pyTorch/default"
    assert model["files"] == sorted(p.name for p in (bundle / "model").glob("*.safetensors"))
    assert {f.split("--")[0] for f in model["files"]} == set(MEMBERS) and not list(bundle.glob("dataset/*.safetensors"))

    kaggle_input, working = tmp_path / "kaggle/input", tmp_path / "kaggle/working"
    (kaggle_input / "competitions").mkdir(parents=True)
    working.mkdir(parents=True)
    (kaggle_input / "competitions" / COMP).symlink_to(project / "data/raw" / COMP)
    (kaggle_input / "toy-blend-forced-bundle").symlink_to(bundle / "dataset")
    shutil.copytree(bundle / "model", kaggle_input / "toy-blend-forced-weights/pytorch/default/3")  # Kaggle's mount
    monkeypatch.setattr(kernel_script, "INPUT", kaggle_input)
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kernel-work"))
    monkeypatch.setattr(paths, "KAGGLE_INPUT", kaggle_input)
    monkeypatch.setattr(paths, "KAGGLE_WORKING", working)

    assert (
        run_blend(kernel_script.with_model_weights(kernel_script.find_bundle("toy-blend-forced-bundle"), manifest)) == 0
    )
    submitted = pd.read_csv(working / "submission.csv", dtype=str)
    pd.testing.assert_frame_equal(submitted, pd.read_csv(project / f"submissions/{COMP}/forced.csv", dtype=str))


@pytest.mark.slow  # drives make
def test_make_model_1_asks_kaggle_bundle_and_kaggle_push_for_a_kaggle_model(tmp_path: Path) -> None:
    import subprocess

    from helpers.builders import REPO

    for target in ("kaggle-bundle", "kaggle-push"):
        command = ["make", "-n", "-f", str(REPO / "Makefile"), target, "COMP=toy", "BLEND=duo", "MODEL=1"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"-m pipeline {target} --comp toy --blend duo" in result.stdout and "--weights model" in result.stdout
