"""The notebook API (pipeline.Experiment) and notebooks/quickstart.ipynb, executed for real so it cannot rot.

The notebook runs in a Jupyter kernel (nbclient + ipykernel) on the demo competition with a tiny setting (its
parameters cell replaced: timm's tiny test model, 32 px, one epoch, 2 folds, a 60-image sample). The API writes the
files the CLI writes, and a bad input raises one exception whose message is the CLI's `error:` line.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers.builders import REPO, TINY_MODEL, run_main, tiny_experiment, write_competition_config

TINY = {"model.name": TINY_MODEL, "model.pretrained": False, "train.epochs": 1, "train.image_size": 32,
        "train.batch_size": 8, "train.warmup_epochs": 0, "folds.n_folds": 2, "tta.views": ["identity"],
        "device": "cpu"}  # fmt: skip


def test_import_pipeline_stays_light() -> None:
    import subprocess

    code = "import sys, pipeline; pipeline.Experiment; print(sorted({'torch', 'timm', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_api_writes_what_the_cli_writes(project: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline import Experiment

    write_competition_config(project)
    config = tiny_experiment(project)
    exp = Experiment(config, set={"train.seed": 7})
    exp.train()
    exp.predict()
    scores = exp.ensemble()
    submission = exp.submission()
    api_run = project / "data/runs/toy/tiny"
    assert submission == project / "submissions/toy/tiny.csv" and submission.exists()
    assert scores == json.loads((api_run / "scores.json").read_text())
    assert list(exp.fold_log(0)["epoch"]) == [1]
    shutil.move(api_run, project / "api-run")
    shutil.move(submission, project / "api.csv")
    for stage in ("train", "predict", "ensemble", "submission"):
        assert run_main(capsys, stage, "--config", str(config), "--set", "train.seed=7").returncode == 0
    cli = json.loads((api_run / "scores.json").read_text())
    assert cli["cv"] == scores["cv"] and cli["folds"] == scores["folds"]
    assert (project / "api.csv").read_text() == submission.read_text()


@pytest.mark.parametrize(
    ("overrides", "call", "cli"),
    [
        ({"train.epoch": 3}, None, ["folds", "--set", "train.epoch=3"]),
        ({"train.epochs": 0}, None, ["folds", "--set", "train.epochs=0"]),
        ({}, lambda exp: exp.ensemble(), ["ensemble"]),
        ({}, lambda exp: exp.train(folds=[7]), ["train", "--fold", "7"]),
    ],
)
def test_api_errors_are_the_cli_error_line(
    project: Path, capsys: pytest.CaptureFixture, overrides: dict, call: object, cli: list[str]
) -> None:
    from pipeline import Experiment, PipelineError

    write_competition_config(project)
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    with pytest.raises(PipelineError) as caught:
        exp = Experiment(config, set=overrides)
        call(exp)
    result = run_main(capsys, cli[0], "--config", str(config), *cli[1:])
    assert result.returncode == 2
    assert str(caught.value) == result.stderr.strip()  # one line, word for word the CLI's


def test_a_missing_config_is_one_error(project: Path) -> None:
    from pipeline import Experiment, PipelineError

    with pytest.raises(PipelineError, match=r"^error: config file configs/toy/nope.yaml not found; run `make init"):
        Experiment("configs/toy/nope.yaml")


@pytest.mark.slow  # 23-35 s: a Jupyter kernel start plus the tiny demo
def test_quickstart_notebook_runs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if importlib.util.find_spec("ipykernel") is None:  # not imported here: this process is no kernel
        pytest.skip("ipykernel is not installed")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PIPELINE_PROGRESS", "off")
    shutil.copytree(REPO / "configs/demo", project / "configs/demo")  # as in a clone; init keeps them
    notebook = nbformat.read(REPO / "notebooks/quickstart.ipynb", as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1
    parameters[0].source = f"SET = {TINY!r}\nSAMPLE = 60"
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(project)}})  # fmt: skip
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "CV accuracy = " in text and "error: unknown key(s) train.epoch" in text
    html = [
        o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}) and "<h1>" in o["data"]["text/html"]
    ]
    assert html and "data:image/png;base64," in html[0]  # the report, inline with its plots
    assert (project / "submissions/demo/baseline-sample60.csv").exists()
    assert (project / "data/runs/demo/baseline-sample60/report.html").exists()


def test_a_partial_run_blends_only_its_folds_and_says_so(project: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from pipeline import Experiment

    write_competition_config(project)
    config = tiny_experiment(project)
    exp = Experiment(config)
    exp.train(folds=[0])
    exp.predict()
    submission = exp.submission()  # the notebook sequence: no explicit ensemble, fold 1 never trained
    run = project / "data/runs/toy/tiny"
    scores = json.loads((run / "scores.json").read_text())
    folds = pd.read_csv(project / "data/processed/toy/folds.csv")
    assert scores["partial"] is True and scores["folds_used"] == [0] and len(scores["folds"]) == 1
    assert scores["cv_rows"] == int((folds["fold"] == 0).sum()) < len(folds)
    assert scores["cv"] == scores["folds"][0]  # the CV is fold 0's rows only
    blend, fold0 = pd.read_csv(run / "test.csv"), pd.read_csv(run / "fold0/test.csv")
    pd.testing.assert_frame_equal(blend, fold0)  # the submission comes from the folds used
    assert submission.exists() and len(pd.read_csv(submission)) == len(fold0)

    plain = run_main(capsys, "ensemble", "--config", str(config))  # `make ensemble`: every fold, or a clear error
    lines = plain.stderr.strip().splitlines()
    assert plain.returncode == 2 and lines[-1].startswith("error: ensemble: fold(s) [1] have no predictions")
    assert "--folds" in lines[-1]
    assert run_main(capsys, "ensemble", "--config", str(config), "--folds", "0").returncode == 0
    bad = run_main(capsys, "ensemble", "--config", str(config), "--folds", "5")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --folds '5'")
