"""report, experiments, doctor, plan and progress on a real tiny run (timm's test model, 32 px, CPU)."""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.builders import run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core import progress
from pipeline.core.config import Config, FoldsConfig, TTAConfig, load_config
from pipeline.core.errors import UserError
from pipeline.reporting import interpret, planner, report

PLOTS = ("curves", "confusion", "top_losses", "tta", "plan")


def read_oof_and_labels(project: Path, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    folds = pd.read_csv(project / "data/processed/toy/folds.csv", dtype=str)
    oof = pd.read_csv(project / "data/runs/toy/tiny/oof.csv", dtype={"id": str}).set_index("id").loc[folds["id"]]
    return folds, oof[classes]


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("layout", ["csv", "multilabel_text"])
def test_report_writes_html_and_plots_of_the_oof_numbers(
    project: Path, layout: str, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, layout)
    config = tiny_experiment(project)
    run_chain(capsys, config)
    result = run_main(capsys, "report", "--config", str(config), "--tta")
    assert result.returncode == 0, result.stderr
    run = project / "data/runs/toy/tiny"
    page = (run / "report.html").read_text()
    for name in PLOTS:
        png = run / f"report_{name}.png"
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 100
        assert f'src="report_{name}.png"' in page
    assert "make lr-find" in page  # no lr_find.png yet: the page says how to get one

    cfg = load_config(config)
    built = report.build_report(cfg, argparse.Namespace())
    folds, oof = read_oof_and_labels(project, cfg.data.classes)
    probs = oof.to_numpy()
    if layout == "csv":  # confusion counts are the OOF argmax against folds.csv's labels
        predicted = np.array(cfg.data.classes)[probs.argmax(axis=1)]
        expected = pd.crosstab(folds["label"], pd.Series(predicted, index=folds.index))
        expected = expected.reindex(index=cfg.data.classes, columns=cfg.data.classes, fill_value=0).to_numpy()
        assert built.confusion.shape == (3, 3) and built.confusion.sum() == len(folds) == 30
        assert (built.confusion == expected).all()
        true_p = probs[np.arange(len(folds)), [cfg.data.classes.index(x) for x in folds["label"]]]
        assert built.top_losses["loss"].iloc[0] == pytest.approx((-np.log(true_p)).max(), rel=1e-5)
    else:  # multi-label: TP/FP/FN/TN per label, each row covering every OOF row
        assert built.confusion.shape == (3, 4) and (built.confusion.sum(axis=1) == len(folds)).all()
        truth = np.array([[c in labels.split() for c in cfg.data.classes] for labels in folds["label"]])
        assert (built.confusion[:, 0] == (truth & (probs >= 0.5)).sum(axis=0)).all()
    assert len(built.top_losses) == 16 and built.top_losses["loss"].is_monotonic_decreasing
    # per-view OOF (--tta) averaged over the configured views is what predict wrote to oof.csv
    views = pd.concat(pd.read_csv(run / f"fold{k}/oof_by_view.csv", dtype={"id": str}) for k in (0, 1))
    mean = views.groupby("id")[cfg.data.classes].mean().loc[folds["id"]].to_numpy()
    assert np.allclose(mean, probs, atol=1e-5)
    assert list(built.tta["view"]) == ["identity", "hflip", "blend: identity+hflip"]


def test_report_before_ensemble_says_what_to_run(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    for stage in ("folds", "train"):
        assert run_main(capsys, stage, "--config", str(config)).returncode == 0
    Image.new("RGB", (200, 120)).save(project / "data/runs/toy/tiny/lr_find.png")  # as `make lr-find` leaves it
    result = run_main(capsys, "report", "--config", str(config))
    assert result.returncode == 0, result.stderr
    page = (project / "data/runs/toy/tiny/report.html").read_text()
    assert "run `make ensemble`" in page and 'src="report_curves.png"' in page
    assert 'src="lr_find.png"' in page
    missing = run_main(capsys, "report", "--config", str(tiny_experiment(project, name="never")))
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "never" in missing.stderr


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_experiments_table_lists_runs_leaderboard_and_differing_keys(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, "csv")
    tiny = tiny_experiment(project)
    run_chain(capsys, tiny)
    other = tiny_experiment(project, name="lr2", train={"lr": 0.01})
    for stage in ("train", "predict", "ensemble"):
        assert run_main(capsys, stage, "--config", str(other)).returncode == 0
    runs = project / "data/runs/toy"
    pd.DataFrame(
        {"experiment": ["tiny", "tiny"], "public_score": [0.5, 0.7], "date": ["2026-01-01", "2026-01-02"]}
    ).to_csv(runs / "leaderboard.csv", index=False)  # fmt: skip  (no private_score column: tolerated)

    result = run_main(capsys, "experiments", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout and "lr2" in result.stdout and "train.lr" in result.stdout
    table = pd.read_csv(runs / "experiments.csv")
    assert sorted(table["experiment"]) == ["lr2", "tiny"]
    config_columns = [c for c in table.columns if "." in c]
    assert config_columns == ["train.lr"]
    row = table.set_index("experiment")
    assert row.loc["tiny", "train.lr"] == pytest.approx(1e-3) and row.loc["lr2", "train.lr"] == pytest.approx(0.01)
    assert row.loc["tiny", "public_score"] == 0.7  # the latest submission
    assert np.isnan(row.loc["lr2", "public_score"])
    scores = pd.read_json(runs / "tiny/scores.json", typ="series")
    assert row.loc["tiny", "cv"] == pytest.approx(scores["cv"])
    assert row.loc["tiny", "fold_max"] - row.loc["tiny", "fold_min"] >= 0
    assert run_main(capsys, "experiments", "--comp", "nothing-here").returncode == 2


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_plan_warns_when_the_limit_is_too_small(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    run_chain(capsys, config)
    fits = run_main(capsys, "plan", "--config", str(config))
    assert fits.returncode == 0 and "fits" in fits.stdout and "warning" not in fits.stderr
    assert "9h" in fits.stdout  # the default kernel limit
    tight = run_main(capsys, "plan", "--config", str(config), "--time-limit", "1s", "--test-images", "1000000")
    assert tight.returncode == 0 and "DOES NOT FIT" in tight.stdout
    assert "warning: inference kernel" in tight.stderr
    assert "fits with at most" in tight.stderr or "too slow" in tight.stderr
    bad = run_main(capsys, "plan", "--config", str(config), "--time-limit", "soon")
    assert bad.returncode == 2 and "--time-limit 'soon'" in bad.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("9h", 32400), ("1h30m", 5400), ("90m", 5400), ("45s", 45), ("3600", 3600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert planner.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "nine hours", "-1h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UserError, match="--time-limit"):
        planner.parse_duration(text)


def test_estimate_scales_with_folds_views_and_images() -> None:
    cfg = Config(folds=FoldsConfig(n_folds=5), tta=TTAConfig(views=["identity", "hflip", "vflip"]))
    cfg.train.epochs = 2
    rate = planner.Throughput(train_images_per_s=100.0, predict_images_per_s=200.0, predict_measured=True,
                              epochs_measured=1)  # fmt: skip
    table = planner.estimate(cfg, rate, n_train=1000, n_test=400)
    inference, full = table.iloc[0], table.iloc[1]
    assert inference["total"] == pytest.approx(5 * 3 * 400 / 200)  # folds x views x test images / speed
    assert full["train"] == pytest.approx(5 * 2 * 800 / 100)  # folds x epochs x training rows / speed
    assert full["predict_oof"] == pytest.approx(5 * 3 * 200 / 200)


@pytest.mark.parametrize("both", [False, True])
def test_doctor_prints_versions_and_never_the_key(
    project: Path, both: bool, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-kaggle-key-0123456789"
    for name in ("KAGGLE_USERNAME", "KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(project / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(project / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_KEY", secret)
    if both:
        monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    kaggle_was_imported = "kaggle" in sys.modules
    result = run_main(capsys, "doctor")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert ("credentials: found" if both else "credentials: missing") in result.stdout
    for name in ("torch", "timm", "albumentations", "kaggle"):
        assert f"{name}: {importlib.metadata.version(name)}" in result.stdout
    assert "python: " in result.stdout and "kaggle kernel: no" in result.stdout and "disk: " in result.stdout
    assert "cuda: " in result.stdout
    assert kaggle_was_imported or "kaggle" not in sys.modules  # importing kaggle would authenticate


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)
    stream, ticks = io.StringIO(), iter(range(1000))
    batches = [np.zeros((8, 3)) for _ in range(25)]  # 200 images in batches of 8
    seen = list(progress.progress(batches, total=200, desc="fold 0", count=progress.len_of_batch, stream=stream,
                                  clock=lambda: float(next(ticks))))  # fmt: skip
    assert len(seen) == 25
    lines = stream.getvalue().splitlines()
    assert 9 <= len(lines) <= 12  # every 10 %, and a final line
    assert lines[-1].startswith("fold 0: 200/200 img (100%)") and "img/s" in lines[-1]
    assert "\r" not in stream.getvalue()

    monkeypatch.setenv("PIPELINE_PROGRESS", "off")
    quiet = io.StringIO()
    assert list(progress.progress(range(5), total=5, desc="x", stream=quiet)) == list(range(5))
    assert quiet.getvalue() == ""


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    assert sum(progress.progress(range(50), total=50, desc="predict", stream=stream)) == sum(range(50))
    assert "predict" in stream.getvalue() and "img/s" in stream.getvalue()


def test_most_confused_and_losses_by_hand() -> None:
    targets = np.array([0, 0, 1, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    matrix = interpret.confusion_counts(targets, probs, "single_label")
    assert matrix.tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0]]
    pairs = interpret.most_confused(matrix, ["a", "b", "c"])
    assert list(zip(pairs["true"], pairs["predicted"], strict=True)) == [("a", "b"), ("b", "a"), ("c", "a")]
    assert interpret.row_losses(targets, probs, "single_label")[4] == pytest.approx(-np.log(0.1))


def test_experiments_leaves_out_sweep_trials_and_marks_partial_runs(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    runs = project / "data/runs/toy"
    for name, lr in (("real", 0.001), ("sw-t000", 0.01), ("sw-t001-sample40", 0.02), ("other-t002", 0.03)):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(f"train:\n  lr: {lr}\n")
    trial_configs = runs / "sweeps/sw/configs/toy"  # where `make sweep` writes each trial's experiment yaml
    trial_configs.mkdir(parents=True)
    for trial in ("sw-t000", "sw-t001"):
        (trial_configs / f"{trial}.yaml").write_text("train:\n  lr: 0.01\n")
    scores = {"metric": "accuracy", "cv": 0.5, "folds": [0.5], "partial": True, "folds_used": [0]}
    (runs / "real/scores.json").write_text(json.dumps(scores))

    result = run_main(capsys, "experiments", "--comp", "toy")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(runs / "experiments.csv").set_index("experiment")
    assert sorted(table.index) == ["other-t002", "real"]  # a name like a trial's, but no sweep made it: kept
    assert table.loc["real", "status"] == "partial: folds [0]"
    assert "left out 2 sweep trial run(s)" in result.stderr
    for name in ("real", "other-t002"):
        for path in (runs / name).iterdir():
            path.unlink()
        (runs / name).rmdir()
    only_trials = run_main(capsys, "experiments", "--comp", "toy")
    assert only_trials.returncode == 2 and only_trials.stderr.strip().splitlines()[-1].startswith("error:")


def test_estimate_counts_decoding_once_per_image_on_the_kernel_cores() -> None:
    cfg = Config(folds=FoldsConfig(n_folds=5), tta=TTAConfig(views=["identity", "hflip"]))
    cfg.train.epochs = 2
    rate = planner.Throughput(train_images_per_s=100.0, predict_images_per_s=200.0, predict_measured=True,
                              epochs_measured=1, decode_images_per_s=50.0, decode_how="test")  # fmt: skip
    inference, full = planner.estimate(cfg, rate, n_train=1000, n_test=400, slowdown=3.0).iloc[:2].to_dict("records")
    per_image = 1 / (50.0 * planner.KERNEL_CORES)  # on the CPU: --slowdown (a slower GPU) does not scale it
    assert inference["decode"] == pytest.approx(400 * per_image)  # the test images once, not once per fold
    assert full["decode"] == pytest.approx(1400 * per_image)  # the cache build: every image once
    assert inference["total"] == pytest.approx(400 * per_image + 3.0 * 5 * 2 * 400 / 200)
    unknown = planner.estimate(cfg, planner.Throughput(100.0, 200.0, True, 1), n_train=1000, n_test=400)
    assert (unknown["decode"] == 0).all()


def test_the_plan_times_decoding_from_the_cache_build_else_a_sample(project: Path, capsys) -> None:  # noqa: ANN001
    from helpers.builders import write_competition_config
    from pipeline.core import paths
    from pipeline.data.cache import build_cache, cache_folder

    write_competition_config(project, "csv", n_train=30, n_test=20)
    cfg = load_config(tiny_experiment(project))
    assert run_main(capsys, "folds", "--config", f"configs/toy/{cfg.exp}.yaml").returncode == 0
    rate, how = planner.measure_decode(cfg)
    assert rate is not None and rate > 0 and how == f"timed on {planner.DECODE_SAMPLE} test images"
    out = paths.for_config(cfg)
    images = list(pd.read_csv(out.test_csv)["image"])
    build_cache(cache_folder(out.processed, cfg.train.image_size), out.raw, images, progress=False)
    recorded, how = planner.measure_decode(cfg)
    assert how == "the cache build's (20 images)" and recorded != rate
    assert planner.measure_decode(load_config(tiny_experiment(project, name="other", train={"image_size": 48}))) \
        [1].startswith("timed on")  # another size has no build of its own: timed again  # fmt: skip
    for image in images:
        (out.raw / image).unlink()
    assert planner.measure_decode(load_config(tiny_experiment(project, name="gone", train={"image_size": 40}))) == \
        (None, "")  # no images here and no record: unknown, and the plan says so  # fmt: skip


def test_with_decoding_in_the_plan_the_suggested_views_still_fit() -> None:
    """Decoding the test images is paid whatever the views: the 'fits with at most N views' advice leaves room
    for it."""
    cfg = Config(folds=FoldsConfig(n_folds=5), tta=TTAConfig(views=["identity", "hflip", "vflip", "hvflip"]))
    rate = planner.Throughput(100.0, 100.0, True, 1, decode_images_per_s=10.0, decode_how="test")
    table = planner.estimate(cfg, rate, n_train=1000, n_test=1000)
    limit = (table.iloc[0]["total"] + 1) / (1 - planner.MARGIN) / 2  # about half of what 4 views need
    advice = next(w for w in planner.suggest(cfg, table, limit) if w.startswith("warning: inference"))
    views = int(advice.split("at most ")[1].split(" ")[0])
    advised = planner.estimate(Config(folds=FoldsConfig(n_folds=5), tta=TTAConfig(views=["identity", "hflip",
                                "vflip", "hvflip"][:views])), rate, n_train=1000, n_test=1000).iloc[0]  # fmt: skip
    assert advised["total"] <= limit * (1 - planner.MARGIN)  # the advice fits, decoding included
