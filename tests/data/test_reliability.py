"""Reliability, second battery (issue 17): odd but valid inputs work, and things that break say so in one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.builders import REPO, run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml

ODD_IDS = ["NA", "null", "None", "nan", "NaN", "-nan"]


def rename_ids(raw: Path, csv: str, folder: str, new_ids: list[str], column: str = "id") -> None:
    """Give the first rows of `csv` the ids `new_ids`, renaming their images to match."""
    frame = pd.read_csv(raw / csv, dtype=str, keep_default_na=False)
    for row, new in enumerate(new_ids):
        old = frame.loc[row, column]
        (raw / folder / f"{old}.png").rename(raw / folder / f"{new}.png")
        frame.loc[row, column] = new
    frame.to_csv(raw / csv, index=False)


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_ids_pandas_reads_as_missing_and_a_blank_target_make_a_correct_submission(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, "csv")
    raw = project / "data/raw/toy"
    rename_ids(raw, "train.csv", "train", ODD_IDS)
    rename_ids(raw, "sample_submission.csv", "test", ODD_IDS)
    sample = pd.read_csv(raw / "sample_submission.csv", dtype=str, keep_default_na=False)
    sample["label"] = ""  # a blank target column, as some competitions ship it
    sample.to_csv(raw / "sample_submission.csv", index=False)
    run_chain(capsys, tiny_experiment(project))
    submission = pd.read_csv(project / "submissions/toy/tiny.csv", dtype=str, keep_default_na=False)
    assert list(submission["id"]) == list(sample["id"])
    assert set(submission["label"]) <= {"cat", "dog", "fox"} and submission["label"].str.len().min() > 0
    oof = pd.read_csv(project / "data/runs/toy/tiny/oof.csv", dtype=str, keep_default_na=False)
    assert set(ODD_IDS) <= set(oof["id"])


# Readers of files the pipeline itself writes with numbers only (training logs), where NA parsing cannot bite.
# The pipeline's own numeric tables (training logs, the leaderboard cache), never a competition's CSV.
OWN_NUMERIC_TABLES = {"report.py": 1, "api.py": 1, "averaging.py": 1, "sweep.py": 1, "tracking.py": 2,
                      "recipe_bench.py": 1}  # fmt: skip


def test_every_competition_csv_goes_through_the_one_reader() -> None:
    """pandas' default NA parsing turns ids like NA or null into missing values: only data.read_csv reads CSVs."""
    package = REPO / "pipeline"
    found = {}
    for module in sorted(package.rglob("*.py")):
        if module.name == "tables.py":
            continue
        count = module.read_text().count("pd.read_csv(") + module.read_text().count("pandas.read_csv(")
        if count:
            found[module.name] = count
    assert found == OWN_NUMERIC_TABLES, f"read CSVs with pipeline.data.tables.read_csv / read_typed_csv: {found}"


def test_submit_validates_odd_ids_and_a_blank_target_column(tmp_path: Path) -> None:
    from pipeline.inference.validate import check_submission
    from pipeline.kaggle.submit import read_table

    sample, submission = tmp_path / "sample_submission.csv", tmp_path / "sub.csv"
    sample.write_text("id,label\nNA,\nnull,\n007,\n")
    submission.write_text("id,label\nNA,cat\nnull,dog\n007,cat\n")
    check_submission(read_table(submission, "x"), read_table(sample, "x"), str(submission))
    frame = read_table(submission, "x")
    assert list(frame["id"]) == ["NA", "null", "007"]


# --- folds.csv follows competition.yaml ----------------------------------------------------------------------------


def edit_competition(project: Path, section: str, **values: object) -> None:
    import yaml

    path = project / "configs/toy/competition.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))


def test_folds_rebuild_when_their_settings_change_and_no_weights_exist(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    folds_csv = project / "data/processed/toy/folds.csv"
    before = folds_csv.read_text()
    edit_competition(project, "folds", n_folds=3)
    result = run_main(capsys, "folds", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "folds.n_folds 2 -> 3" in result.stderr
    after = pd.read_csv(folds_csv)
    assert folds_csv.read_text() != before and sorted(after["fold"].unique()) == [0, 1, 2]
    again = run_main(capsys, "folds", "--config", str(config))
    assert again.returncode == 0 and "is current, skipping" in again.stderr


# --- a full disk ---------------------------------------------------------------------------------------------------


def full_disk_temp(path: Path) -> Path:
    """Plant this process's temp file for `path` as a link to /dev/full: every write to it fails with a real ENOSPC
    from the kernel (what a full disk returns), while the folder itself stays writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to("/dev/full")
    return tmp


@pytest.mark.parametrize("kind", ["csv", "torch", "safetensors", "json"])
def test_a_full_disk_is_one_error_naming_the_file_and_the_space_needed(tmp_path: Path, kind: str) -> None:
    import torch

    from pipeline.core import artifacts
    from pipeline.core.errors import UserError

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    path = tmp_path / "out" / f"artifact.{kind}"
    full_disk_temp(path)
    tensors = {"w": torch.zeros(512, 1024)}  # 2 MB
    writers = {
        "csv": lambda: artifacts.write_csv(path, pd.DataFrame({"x": range(300_000)})),
        "torch": lambda: artifacts.save_torch(path, {"state_dict": tensors}),
        "safetensors": lambda: artifacts.save_safetensors(path, tensors, {"fingerprint": "x"}),
        "json": lambda: artifacts.write_json(path, {"a": 1}),
    }
    with pytest.raises(UserError) as info:
        writers[kind]()
    message = str(info.value)
    assert message.startswith(f"cannot write {path}: no space left on device (need ~"), message
    assert kind == "json" or "(need ~2 MB)" in message
    assert not path.exists() and not list(path.parent.iterdir()), "a temp file (or the link) was left behind"


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_file_size_limit_while_building_the_cache_and_training_is_one_line(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    """A real limit (RLIMIT_FSIZE in the child): writes past it fail with EFBIG, as a full disk fails with ENOSPC.
    The cache used to be a writable memory map, which dies with SIGBUS there (exit 135, nothing said)."""
    import resource
    import subprocess
    import sys

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    stages = {
        "cache/37px/images.u8": ["cache"],
        # one epoch: no resume checkpoint after the last epoch (nothing would read it), so the weights are the write
        "fold0/model.safetensors": ["train", "--fold", "0", "--set", "train.cache=false"],
    }
    for written, stage_args in stages.items():
        result = subprocess.run([sys.executable, "-m", "pipeline", *stage_args, "--config", str(config)], cwd=project,
                                capture_output=True, text=True, timeout=300, preexec_fn=limit)  # fmt: skip
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr
        assert lines[-1].startswith("error: cannot write ") and "file too large" in lines[-1], result.stderr
        assert f"{written}: file too large" in lines[-1], lines[-1]
        assert "(need ~" in lines[-1] and "Traceback" not in result.stderr
        assert not list(project.rglob("*.tmp")), "a temp file was left behind"


def test_not_enough_free_space_for_the_cache_stops_before_decoding(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import pipeline.data.cache
    import pipeline.data.decode

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    usage = shutil.disk_usage(project)
    monkeypatch.setattr(pipeline.data.cache.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    monkeypatch.setattr(pipeline.data.decode, "load_image", lambda *_, **__: pytest.fail("decoded an image first"))
    result = run_main(capsys, "cache", "--config", str(config))
    assert result.returncode == 2
    assert "images.u8: no space left on device (need ~1 MB" in result.stderr and "train.cache: false" in result.stderr
    assert not list(project.rglob("*.tmp"))


def test_temp_files_of_killed_runs_are_swept_when_a_stage_starts(project: Path, capsys: pytest.CaptureFixture) -> None:
    import subprocess

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    dead = subprocess.run(["true"]).returncode or subprocess.Popen(["true"])
    dead.wait()  # a pid that has exited: its writer was killed
    cache = project / "data/processed/toy/cache/37px"
    cache.mkdir(parents=True)
    stale = cache / f".images.u8.{dead.pid}.tmp"
    stale.write_bytes(b"x" * 100)
    live = cache / f".images.u8.{os.getppid()}.tmp"  # a running process's temp file stays
    live.write_bytes(b"y")
    result = run_main(capsys, "predict", "--config", str(config), "--fold", "0")
    assert result.returncode == 2  # not trained yet: the sweep happened anyway, at the start
    assert not stale.exists() and live.exists()


# --- float and 16-bit images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "value", "expected_mode", "pixel"),
    [
        (np.float32, 0.5, "F", 128),  # float 0..1: x255
        (np.float32, 1.0, "F", 255),
        (np.float32, 200.0, "F", 200),  # float above 1: already 0..255
        (np.uint16, 65535, "I;16", 255),  # 16-bit: /257
        (np.uint16, 257 * 100, "I;16", 100),
        (np.int32, 30000, "I", 117),  # 32-bit integer, read as 16-bit
    ],
)
def test_float_and_16_bit_tiffs_scale_to_8_bits(tmp_path: Path, dtype: type, value: float, expected_mode: str,
                                                pixel: int) -> None:  # fmt: skip
    from PIL import Image

    from pipeline.data.tables import load_image

    path = tmp_path / "image.tif"
    Image.fromarray(np.full((6, 8), value, dtype=dtype)).save(path)
    assert Image.open(path).mode == expected_mode
    pixels = load_image(path)
    assert pixels.shape == (6, 8, 3) and pixels.dtype == np.uint8 and (pixels == pixel).all(), pixels[0, 0]


UNSCALABLE = [(np.float32, np.nan, "NaN"), (np.float32, -0.5, "-0.5"), (np.float32, 1000.0, "1000"),
              (np.int32, 70000, "70000")]  # fmt: skip


@pytest.mark.parametrize(("dtype", "value", "said"), UNSCALABLE)
def test_pixel_values_no_scale_can_hold_are_refused_naming_the_file(tmp_path: Path, dtype: type, value: float,
                                                                    said: str) -> None:  # fmt: skip
    from PIL import Image

    from pipeline.core.errors import UserError
    from pipeline.data.tables import load_image

    path = tmp_path / "odd.tif"
    pixels = np.zeros((6, 8), dtype=dtype)
    pixels[2, 3] = value
    Image.fromarray(pixels).save(path)
    with pytest.raises(UserError, match=f"image {path} .*{said}.*convert it"):
        load_image(path)


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_model_built_for_224_px_trains_and_predicts_at_32(project: Path, capsys: pytest.CaptureFixture) -> None:
    """vit_tiny_patch16_224 has a fixed input size: timm builds it for train.image_size (img_size) instead of
    failing at the first forward."""
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, model={"name": "vit_tiny_patch16_224"})
    for stage in ("folds", "train", "predict"):
        result = run_main(capsys, stage, "--config", str(config), *(["--fold", "0"] if stage != "folds" else []))
        assert result.returncode == 0, f"{stage}: {result.stderr}"
    assert (project / "data/runs/toy/tiny/fold0/test.csv").exists()


@pytest.mark.parametrize(("name", "reason"), [("a:b.txt", None), ("train/x:y.png", None), ("C:/x", "an absolute path"),
                                              ("c:", "an absolute path"), ("/etc/x", "an absolute path")])  # fmt: skip
def test_a_colon_in_a_zip_entry_name_is_not_an_absolute_path(name: str, reason: str | None) -> None:
    import zipfile

    from pipeline.kaggle import download

    assert download.unsafe_reason(zipfile.ZipInfo(name)) == reason


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_a_second_run_of_the_same_fold_says_who_holds_it(project: Path, capsys: pytest.CaptureFixture) -> None:
    import socket
    import subprocess
    import sys

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    lock = project / "data/runs/toy/tiny/fold0/.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from pipeline.core.locks import fold_lock\n"
         "with fold_lock(Path(sys.argv[1]), 0, 'train'):\n    print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_main(capsys, "train", "--config", str(config), "--fold", "0")
        assert result.returncode == 2
        assert f"fold 0 is busy: `train` holds {lock} (pid {holder.pid} on {socket.gethostname()}" in result.stderr
        assert not (project / "data/runs/toy/tiny/fold0/model.safetensors").exists()
    finally:
        holder.kill()
        holder.wait()
    done = run_main(capsys, "train", "--config", str(config), "--fold", "0")  # the holder died: the fold is free
    assert done.returncode == 0, done.stderr
