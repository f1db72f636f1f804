"""Bad input, as a table: every user mistake exits 2 with one `error:` line that says what and where.

Each case builds a tiny competition (test_chain's csv layout unless it names another: 30 train rows of 3
classes, 6 test rows, 2 folds), breaks one thing, and runs the stage that should notice. For every case:
exit status 2; stderr is exactly one line, starting with `error:` and holding the case's fragments (the
file, row, column or key, and what to do); no traceback; the stage's output file absent (or, where the case
planted a broken one, untouched) and no temp file left anywhere in the project. A few cases go through a
real `python -m pipeline` subprocess.
"""

from __future__ import annotations

import os
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from helpers.builders import TINY_MODEL, run_cli, run_main, tiny_experiment, write_source_run
from helpers.chain import write_competition_yaml

COMP = "toy"
OUTPUTS = {  # each stage's final output, which must not exist after it refused
    "folds": "data/processed/toy/folds.csv",
    "train": "data/runs/toy/tiny/fold0/model.safetensors",
    "predict": "data/runs/toy/tiny/fold0/test.csv",
    "init": "configs/toy/baseline.yaml",
    "pseudo": "configs/toy/tiny-pseudo.yaml",
}


class Payload:
    """Pickles as a call to Path.touch(marker): loading it with plain pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@dataclass
class Ctx:
    """One case's project: the broken thing is set up through these helpers."""

    project: Path
    capsys: pytest.CaptureFixture
    monkeypatch: pytest.MonkeyPatch
    stage: str
    config: Path
    args: list[str] = field(default_factory=list)

    @property
    def raw(self) -> Path:
        return self.project / "data" / "raw" / COMP

    @property
    def marker(self) -> Path:
        return self.project / "payload-ran"

    def image(self, name: str = "tr003", folder: str = "train") -> Path:
        return self.raw / folder / f"{name}.png"

    def validation_image(self) -> Path:
        """An image of fold 0's validation rows: decoded by every run of fold 0 (training may drop a last batch)."""
        folds = pd.read_csv(self.project / OUTPUTS["folds"], dtype=str)
        return self.image(folds.loc[folds["fold"] == "0", "id"].iloc[0])

    def table(self, name: str = "train.csv") -> pd.DataFrame:
        return pd.read_csv(self.raw / name, dtype=str, keep_default_na=False)

    def save_table(self, frame: pd.DataFrame, name: str = "train.csv") -> None:
        frame.to_csv(self.raw / name, index=False)

    def edit_yaml(self, path: Path, section: str | None, **values: object) -> None:
        data = yaml.safe_load(path.read_text()) or {}
        if section is None:
            data.update(values)
        else:
            data.setdefault(section, {}).update(values)
        path.write_text(yaml.safe_dump(data))

    def edit_competition(self, section: str | None, **values: object) -> None:
        self.edit_yaml(self.project / "configs" / COMP / "competition.yaml", section, **values)

    def edit_experiment(self, section: str | None, **values: object) -> None:
        self.edit_yaml(self.config, section, **values)

    def ok(self, stage: str, *extra: str) -> None:
        result = run_main(self.capsys, stage, "--config", str(self.config), *extra)
        assert result.returncode == 0, result.stderr

    def trained(self) -> None:
        self.ok("folds")
        self.ok("train", "--fold", "0")

    def fold_weights(self) -> Path:
        return self.project / "data/runs/toy/tiny/fold0/model.safetensors"

    def fold_metadata(self) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(str(self.fold_weights()), framework="pt") as f:
            return f.metadata()


@dataclass(frozen=True)
class Case:
    stage: str
    breaks: Callable[[Ctx], None]
    expect: tuple[str, ...]
    layout: str = "csv"
    cli: bool = False  # through a real subprocess
    root_can_write: bool = False  # chmod does not stop root: skip there
    within: float | None = None  # seconds: fails fast rather than waiting on a network timeout


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def state_dict_file(path: Path, model_name: str, num_classes: int, metadata: dict[str, str] | None = None) -> None:
    import timm

    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)


def payload_file(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "extra": Payload(marker)}, path)


# --- what each case breaks ---------------------------------------------------------------------------------------


def malformed_yaml(c: Ctx) -> None:
    c.config.write_text("model:\n  name: [unclosed\n")


def malformed_competition_yaml(c: Ctx) -> None:
    path = c.project / "configs" / COMP / "competition.yaml"
    path.write_text(path.read_text() + "metric: {accuracy\n")


def unknown_key(c: Ctx) -> None:
    c.edit_experiment("train", epoch=3)


def misplaced_key(c: Ctx) -> None:
    c.edit_competition(None, model={"name": "resnet18"})


def wrong_type(c: Ctx) -> None:
    c.edit_experiment("train", epochs="three")


def wrong_list_type(c: Ctx) -> None:
    c.edit_experiment("tta", views="hflip")


def override_syntax(c: Ctx) -> None:
    c.args += ["--set", "train.epochs"]


def override_type(c: Ctx) -> None:
    c.args += ["--set", "train.lr=fast"]


def missing_config(c: Ctx) -> None:
    c.args[c.args.index("--config") + 1] = str(c.config.with_name("nope.yaml"))


def no_config_argument(c: Ctx) -> None:
    c.args[c.args.index("--config") : c.args.index("--config") + 2] = []


def unknown_stage(c: Ctx) -> None:
    c.args[0] = "trian"


def unknown_option(c: Ctx) -> None:
    c.args += ["--epochs", "3"]


def fold_out_of_range(c: Ctx) -> None:
    c.args += ["--fold", "7"]


def unknown_view(c: Ctx) -> None:
    c.edit_experiment("tta", views=["identity", "flip"])


def unknown_metric(c: Ctx) -> None:
    c.edit_competition(None, metric="auc")


def unknown_device(c: Ctx) -> None:
    c.edit_experiment(None, device="gpu")


def cuda_missing(c: Ctx) -> None:
    c.edit_experiment(None, device="cuda")


def one_fold(c: Ctx) -> None:
    c.edit_competition("folds", n_folds=1)


def bad_time_budget(c: Ctx) -> None:
    c.ok("folds")
    c.args += ["--set", "train.time_budget=soon"]


def missing_train_table(c: Ctx) -> None:
    (c.raw / "train.csv").unlink()


def unreadable_train_table(c: Ctx) -> None:
    (c.raw / "train.csv").write_bytes(b"id,label\n\xff\xfe\x00garbage,\x81\x82\n")


def zero_byte_train_table(c: Ctx) -> None:
    (c.raw / "train.csv").write_bytes(b"")


def missing_id_column(c: Ctx) -> None:
    c.save_table(c.table().rename(columns={"id": "ID"}))


def missing_label_column(c: Ctx) -> None:
    c.save_table(c.table().rename(columns={"label": "class"}))


def semicolon_train_table(c: Ctx) -> None:
    c.table().to_csv(c.raw / "train.csv", index=False, sep=";")


def empty_train_table(c: Ctx) -> None:
    c.save_table(c.table().iloc[:0])


def set_cell(row: int, column: str, value: str) -> Callable[[Ctx], None]:
    """A case that writes `value` into one cell of the train table."""

    def edit(c: Ctx) -> None:
        frame = c.table()
        frame.loc[row, column] = value
        c.save_table(frame)

    return edit


duplicate_ids = set_cell(7, "id", "tr002")
empty_id = set_cell(4, "id", "")
nan_label = set_cell(5, "label", "")
unknown_label = set_cell(6, "label", "wolf")


def rare_class(c: Ctx) -> None:
    frame = c.table()
    foxes = frame.index[frame["label"] == "fox"]
    frame.loc[foxes[1:], "label"] = "cat"
    c.save_table(frame)


def onehot_not_binary(c: Ctx) -> None:
    frame = c.table()
    frame.loc[8, "dog"] = "2"
    c.save_table(frame)


def missing_group_column(c: Ctx) -> None:
    c.edit_competition("folds", group_column="patient")


def id_with_dotdot(c: Ctx) -> None:
    shutil.copy(c.image(), c.project / "data" / "raw" / "secret.png")  # the file exists: refused, not "not found"
    set_cell(3, "id", "../../secret")(c)


def image_linked_outside(c: Ctx) -> None:
    outside = c.project / "elsewhere.png"
    shutil.copy(c.image(), outside)
    c.image().unlink()
    c.image().symlink_to(outside)


def missing_image(c: Ctx) -> None:
    c.image("tr004").unlink()


def zero_byte_image(c: Ctx) -> None:
    c.image().write_bytes(b"")


def truncated_image(c: Ctx) -> None:
    c.ok("folds")
    truncate(c.validation_image())


def not_an_image(c: Ctx) -> None:
    c.ok("folds")
    c.validation_image().write_text("<html>404 Not Found</html>\n")


def truncated_image_in_worker(c: Ctx) -> None:
    c.edit_experiment("train", num_workers=2)
    truncated_image(c)


def missing_test_image(c: Ctx) -> None:
    c.image("te002", "test").unlink()


def missing_sample_submission(c: Ctx) -> None:
    (c.raw / "sample_submission.csv").unlink()


def sample_submission_id_column(c: Ctx) -> None:
    name = "sample_submission.csv"
    c.save_table(c.table(name).rename(columns={"id": "image"}), name)


def duplicate_test_ids(c: Ctx) -> None:
    name = "sample_submission.csv"
    frame = c.table(name)
    frame.loc[4, "id"] = "te001"
    c.save_table(frame, name)


def header_only_sample_submission(c: Ctx) -> None:
    name = "sample_submission.csv"
    c.save_table(c.table(name).iloc[:0], name)


def missing_test_folder(c: Ctx) -> None:
    c.edit_competition("data", test_csv=None)
    shutil.rmtree(c.raw / "test")


def corrupt_test_image(c: Ctx) -> None:
    c.trained()
    truncate(c.image("te001", "test"))


def unknown_model(c: Ctx) -> None:
    c.ok("folds")
    c.edit_experiment("model", name="resnet-18")


def fixed_size_model_at_another_size(c: Ctx) -> None:
    c.ok("folds")
    c.edit_experiment("model", name="crossvit_tiny_240")  # fixed input size; timm's img_size does not rescale it


def hub_unreachable(c: Ctx) -> None:
    """pretrained=true, no network, nothing cached: fail at once (no minute of retries), without HF_HUB_OFFLINE."""
    from huggingface_hub import constants

    import pipeline.commands.init

    c.ok("folds")
    c.edit_experiment("model", pretrained=True)
    c.monkeypatch.setattr(pipeline.commands.init, "hub_reachable", lambda timeout=3.0: False)
    c.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    c.monkeypatch.setattr(constants, "HF_HUB_CACHE", str(c.project / "empty-hf-cache"))


def pretrained_missing(c: Ctx) -> None:
    c.ok("folds")
    c.edit_experiment("model", pretrained="data/weights/nope.safetensors")


def pretrained_other_architecture(c: Ctx) -> None:
    c.ok("folds")
    state_dict_file(c.project / "data/weights/byob.safetensors", "test_byobnet", 1000)
    c.edit_experiment("model", pretrained="data/weights/byob.safetensors")


def pretrained_garbage(c: Ctx) -> None:
    c.ok("folds")
    path = c.project / "data/weights/garbage.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(4096))
    c.edit_experiment("model", pretrained="data/weights/garbage.safetensors")


def pretrained_payload(c: Ctx) -> None:
    c.ok("folds")
    payload_file(c.project / "data/weights/evil.pth", c.marker)
    c.edit_experiment("model", pretrained="data/weights/evil.pth")


def checkpoint_payload(c: Ctx) -> None:
    c.ok("folds")
    payload_file(c.project / "data/runs/toy/tiny/fold0/work/last.pt", c.marker)


def checkpoint_other_config(c: Ctx) -> None:
    c.ok("folds")
    stopped = run_main(c.capsys, *c.args, "--set", "train.time_budget=0.001", "train.epochs=2")
    assert stopped.returncode == 75, stopped.stderr
    c.args += ["--set", "train.lr=0.5", "train.epochs=2"]


def fold_weights_garbage_at_train(c: Ctx) -> None:
    c.ok("folds")
    c.fold_weights().parent.mkdir(parents=True)
    c.fold_weights().write_bytes(os.urandom(2048))


def fold_weights_other_architecture(c: Ctx) -> None:
    c.trained()
    metadata = c.fold_metadata()
    state_dict_file(c.fold_weights(), "test_byobnet", 3, metadata)
    (c.project / "data/runs/toy/tiny/fold0/test.csv").unlink(missing_ok=True)


def fold_weights_other_class_count(c: Ctx) -> None:
    c.trained()
    state_dict_file(c.fold_weights(), TINY_MODEL, 5, c.fold_metadata())


def fold_weights_payload(c: Ctx) -> None:
    c.trained()
    payload_file(c.fold_weights(), c.marker)


def fold_weights_other_config(c: Ctx) -> None:
    c.trained()
    c.args += ["--set", "train.lr=0.5"]


def predict_before_train(c: Ctx) -> None:
    c.ok("folds")


def output_under_a_file(c: Ctx) -> None:
    (c.project / "data" / "processed").write_text("not a folder\n")


def output_is_a_folder(c: Ctx) -> None:
    (c.project / "data/processed/toy/test.csv").mkdir(parents=True)


def output_read_only(c: Ctx) -> None:
    folder = c.project / "data" / "processed"
    folder.mkdir(parents=True)
    folder.chmod(0o555)


def fold_seed_changed_after_training(c: Ctx) -> None:
    c.trained()
    c.edit_competition("folds", seed=1)


def train_table_changed_after_training(c: Ctx) -> None:
    c.trained()
    set_cell(3, "label", "fox")(c)


def fold_seed_changed_before_training(c: Ctx) -> None:
    c.ok("folds")
    c.edit_competition("folds", seed=1)


def overrides(*settings: str) -> Callable[[Ctx], None]:
    """A case that only adds --set overrides (what a user types in SET=...)."""

    def add(c: Ctx) -> None:
        c.args += ["--set", *settings]

    return add


def duplicate_classes(c: Ctx) -> None:
    c.edit_competition("data", classes=["cat", "dog", "fox", "cat"])


def init_onehot_blank_cell(c: Ctx) -> None:
    set_cell(6, "dog", "")(c)
    c.args[:] = ["init", "--comp", COMP]


def init_empty_train_table_without_folders(c: Ctx) -> None:
    empty_train_table(c)
    for folder in ("train", "test"):
        shutil.rmtree(c.raw / folder)
    c.args[:] = ["init", "--comp", COMP]


def init_without_data(c: Ctx) -> None:
    shutil.rmtree(c.raw)
    c.args[:] = ["init", "--comp", COMP]


CASES: dict[str, Case] = {
    # config files, overrides and the command line
    "malformed yaml": Case("folds", malformed_yaml, ("tiny.yaml line ", "malformed YAML"), cli=True),
    "malformed competition.yaml": Case("folds", malformed_competition_yaml, ("competition.yaml line", "malformed")),
    "unknown config key": Case("folds", unknown_key, ("unknown key(s) train.epoch", "known: ")),
    "competition key in the wrong file": Case("folds", misplaced_key, ("competition.yaml", "unknown key(s) model")),
    "wrong value type": Case("train", wrong_type, ("train.epochs", "expected an integer", "'three'")),
    "a string where a list belongs": Case("predict", wrong_list_type, ("tta.views", "expected a list")),
    "invalid override syntax": Case("train", override_syntax, ("override 'train.epochs'", "key=value")),
    "override of the wrong type": Case("train", override_type, ("train.lr", "expected a number", "'fast'")),
    "missing config file": Case("train", missing_config, ("nope.yaml", "not found", "make init")),
    "no --config": Case("train", no_config_argument, ("--config", "CONFIG=")),
    "unknown stage": Case("train", unknown_stage, ("'trian'", "invalid choice", "--help")),
    "unknown option": Case("train", unknown_option, ("--epochs", "unrecognized", "--help")),
    "fold out of range": Case("train", fold_out_of_range, ("--fold 7", "0..1")),
    "unknown TTA view": Case("predict", unknown_view, ("tta.views[1]", "'flip'", "known: identity")),
    "unknown metric": Case("folds", unknown_metric, ("metric", "'auc'", "known: ")),
    "unknown device": Case("train", unknown_device, ("device", "'gpu'", "auto, cpu, cuda, mps")),
    "cuda without a GPU": Case("train", cuda_missing, ("device: cuda", "device=auto")),
    "one fold": Case("folds", one_fold, ("folds.n_folds", "at least 2")),
    "bad time budget": Case("train", bad_time_budget, ("train.time_budget", "'soon'", "8h")),
    # values that pass the type check but cannot work: ranges are part of the schema (issue 17.8)
    "train.lr nan": Case("train", overrides("train.lr=nan"), ("train.lr", "finite number", "'nan'")),
    "train.lr inf": Case("train", overrides("train.lr=.inf"), ("train.lr", "finite number")),
    "augment.hflip above 1": Case("train", overrides("augment.hflip=1.5"), ("augment.hflip", "in [0, 1]", "1.5")),
    "augment.scale_min above 1": Case("train", overrides("augment.scale_min=2"), ("augment.scale_min", "in (0, 1]")),
    "model.drop_rate above 1": Case("train", overrides("model.drop_rate=1.5"), ("model.drop_rate", "in [0, 1)")),
    "negative color_jitter": Case("train", overrides("augment.color_jitter=-0.1"),
                                  ("augment.color_jitter", "at least 0", "-0.1")),
    "negative warmup_epochs": Case("train", overrides("train.warmup_epochs=-1"), ("train.warmup_epochs", "at least 0")),
    "unknown optimizer": Case("train", overrides("train.opt=adamx"), ("train.opt", "'adamx'", "timm optimizer")),
    "unknown scheduler": Case("train", overrides("train.sched=cosin"), ("train.sched", "'cosin'", "known: cosine")),
    "duplicate data.classes": Case("folds", duplicate_classes, ("data.classes", "['cat']", "more than once")),
    # the train table
    "missing train table": Case("folds", missing_train_table, ("train.csv", "not found", "data.")),
    "train table not a CSV": Case("folds", unreadable_train_table, ("train.csv", "not a readable CSV")),
    "zero-byte train table": Case("folds", zero_byte_train_table, ("train.csv", "is empty", "download")),
    "missing id column": Case("folds", missing_id_column, ("train.csv", "no column 'id'", "data.id_column")),
    "missing label column": Case("folds", missing_label_column, ("no column 'label'", "data.label_column")),
    "semicolon-delimited train table": Case("folds", semicolon_train_table,
                                            ("train.csv", "';'-delimited", "comma-separated")),
    "empty train table": Case("folds", empty_train_table, ("train.csv", "no training rows")),
    "duplicate ids": Case("folds", duplicate_ids, ("train.csv row 9", "duplicate id 'tr002'", "row 4", "unique")),
    "empty id": Case("folds", empty_id, ("train.csv row 6", "empty id", "'id'")),
    "NaN label": Case("folds", nan_label, ("train.csv row 7", "column 'label'", "'tr005'", "fill it or drop")),
    "label not in data.classes": Case("folds", unknown_label, ("train.csv row 8", "'wolf'", "data.classes")),
    "class with fewer rows than folds": Case("folds", rare_class, ("class 'fox' has 1 row,", "n_folds=2", "lower")),
    "one-hot cell not 0/1": Case("folds", onehot_not_binary, ("row 10", "column 'dog'", "'2'"), layout="onehot_single"),
    "missing group column": Case("folds", missing_group_column, ("no column 'patient'", "folds.group_column")),
    # images
    "image listed but missing": Case("folds", missing_image, ("tr004", "not found", "data.image_ext"), cli=True),
    "id with ..": Case("folds", id_with_dotdot, ("id '../../secret'", "outside the competition folder")),
    "image linked outside the competition": Case("folds", image_linked_outside,
                                                 ("id 'tr003'", "elsewhere.png", "outside the competition folder")),
    "zero-byte image": Case("folds", zero_byte_image, ("tr003.png", "id 'tr003'", "0 bytes", "replace the file")),
    "truncated image": Case("train", truncated_image, ("train/tr0", ".png is truncated", "replace the file")),
    "not an image": Case("train", not_an_image, ("train/tr0", ".png is not an image", "replace the file")),
    "truncated image in a DataLoader worker": Case("train", truncated_image_in_worker,
                                                   ("train/tr0", ".png is truncated"), cli=True),
    # the test listing
    "test id with no image": Case("folds", missing_test_image, ("sample_submission.csv", "'te002'", "not found")),
    "sample_submission missing": Case("folds", missing_sample_submission, ("sample_submission.csv", "not found")),
    "sample_submission id column": Case("folds", sample_submission_id_column,
                                        ("sample_submission.csv", "no column 'id'", "data.submission_id_column")),
    "duplicate test ids": Case("folds", duplicate_test_ids,
                               ("sample_submission.csv", "duplicate test id(s) 'te001'", "once")),
    "header-only sample_submission": Case("folds", header_only_sample_submission,
                                          ("sample_submission.csv", "header but no rows")),
    "test folder missing": Case("folds", missing_test_folder, ("test", "not found", "data.test_dir")),
    "corrupt test image": Case("predict", corrupt_test_image, ("te001.png", "is truncated")),
    # models and weights
    "unknown timm model": Case("train", unknown_model, ("model.name", "'resnet-18'", "did you mean resnet18")),
    "fixed-size model at another size": Case("train", fixed_size_model_at_another_size,
                                             ("train.image_size", "crossvit_tiny_240", "240 px", "32 px")),
    "hub weights with no network": Case("train", hub_unreachable, ("model.pretrained", "offline?", "local weights"),
                                        within=15),
    "pretrained file missing": Case("train", pretrained_missing, ("model.pretrained", "nope.safetensors", "not found")),
    "pretrained for another architecture": Case("train", pretrained_other_architecture,
                                                ("model.pretrained", "byob.safetensors", "does not fit", TINY_MODEL)),
    "pretrained file not weights": Case("train", pretrained_garbage, ("model.pretrained", "garbage.safetensors")),
    "pretrained pickle with a payload": Case("train", pretrained_payload, ("evil.pth", "pickled code"), cli=True),
    "checkpoint pickle with a payload": Case("train", checkpoint_payload, ("last.pt", "delete")),
    "checkpoint from another config": Case("train", checkpoint_other_config,
                                           ("last.pt", "different config", "delete")),
    "fold weights not safetensors (train)": Case("train", fold_weights_garbage_at_train,
                                                 ("fold0/model.safetensors", "not a safetensors file")),
    "fold weights of another architecture": Case("predict", fold_weights_other_architecture,
                                                 ("fold0/model.safetensors", "does not fit", "re-run train")),
    "fold weights of another class count": Case("predict", fold_weights_other_class_count,
                                                 ("fold0/model.safetensors", "with 3 classes", "re-run train")),
    "fold weights pickle with a payload": Case("predict", fold_weights_payload,
                                               ("fold0/model.safetensors", "not a safetensors file", "re-run train")),
    "fold weights from another config": Case("predict", fold_weights_other_config, ("different config",)),
    "predict before train": Case("predict", predict_before_train, ("model.safetensors not found", "make train")),
    # folds.csv follows competition.yaml and the train table (issue 17.3)
    "fold settings changed under trained weights": Case("folds", fold_seed_changed_after_training,
                                                        ("folds.seed 0 -> 1", "fold0/model.safetensors", "delete")),
    "train table changed under trained weights": Case("folds", train_table_changed_after_training,
                                                      ("train table (train.csv) changed", "fold0/model.safetensors")),
    "stale folds.csv at train": Case("train", fold_seed_changed_before_training,
                                     ("folds.csv was made under other settings", "folds.seed 0 -> 1", "make folds")),
    # where output goes
    "output folder is a file": Case("folds", output_under_a_file, ("data/processed", "cannot create folder")),
    "output file is a folder": Case("folds", output_is_a_folder, ("test.csv", "cannot write")),
    "output folder read-only": Case("folds", output_read_only, ("data/processed", "permission denied"),
                                    root_can_write=True),
    "init: one-hot cell blank": Case("init", init_onehot_blank_cell, ("train.csv row 8", "column 'dog'", "blank"),
                                     layout="onehot_single"),
    "init: empty train table, no image folders": Case("init", init_empty_train_table_without_folders,
                                                      ("train.csv", "no rows")),
    "init without raw data": Case("init", init_without_data, ("data/raw/toy", "make download")),
}  # fmt: skip


# metrics, losses and augmentation policies (issue 15)
def metric_without_k(c: Ctx) -> None:
    c.edit_competition(None, metric={"name": "map"})


def custom_metric_not_importable(c: Ctx) -> None:
    c.edit_competition(None, metric={"function": "nomodule:score", "higher_is_better": True})


def custom_metric_not_a_number(c: Ctx) -> None:
    (c.project / "configs" / COMP / "textmetric.py").write_text("def score(y, p):\n    return 'high'\n")
    c.edit_competition(None, metric={"function": "textmetric:score", "higher_is_better": True})
    c.ok("folds")


def unknown_loss(c: Ctx) -> None:
    c.edit_experiment("train", loss="hinge")


def swa_longer_than_training(c: Ctx) -> None:
    c.edit_experiment("train", swa={"epochs": 99})


def unknown_policy(c: Ctx) -> None:
    c.edit_experiment("augment", policy="strong")


def unknown_transform(c: Ctx) -> None:
    c.edit_experiment("augment", policy="custom", custom=["CLAHE", "Blurr"])


def unknown_transform_argument(c: Ctx) -> None:
    c.edit_experiment("augment", policy="custom", custom=[{"Affine": {"rotat": 10}}])


def refit_before_folds(c: Ctx) -> None:
    c.edit_experiment("train", keep="best")  # the refit's epochs come from the folds' saved epochs
    c.args += ["--fold", "refit"]


def seed_outside_the_bag(c: Ctx) -> None:
    c.args += ["--set", "train.seeds=[7,8]", "--seed", "9"]


def seed_without_a_bag(c: Ctx) -> None:
    c.args += ["--seed", "3"]


def seed_with_the_refit(c: Ctx) -> None:
    c.args = [a if a != "0" else "refit" for a in c.args] + ["--set", "train.seeds=[7,8]", "--seed", "7"]


CASES.update({
    "duplicate bag seeds": Case("train", overrides("train.seeds=[7,7]"), ("train.seeds", "[7]", "more than once")),
    "negative bag seed": Case("train", overrides("train.seeds=[-1,2]"), ("train.seeds[0]", "must be in [0,", "-1")),
    "--seed outside train.seeds": Case("train", seed_outside_the_bag, ("--seed 9", "train.seeds is [7, 8]")),
    "--seed without a bag": Case("train", seed_without_a_bag, ("--seed 3", "no seed bag")),
    "--seed with the refit": Case("train", seed_with_the_refit, ("--seed 7", "refit is one model")),
})  # fmt: skip

CASES.update({
    "refit before the folds are trained": Case("train", refit_before_folds, ("fold0/model.safetensors", "make train")),
    "ensemble.refit not a boolean": Case("train", overrides("ensemble.refit=maybe"), ("ensemble.refit", "'maybe'")),
    "metric parameter missing": Case("folds", metric_without_k, ("metric.k", "missing", "map")),
    "custom metric not importable": Case("folds", custom_metric_not_importable, ("metric.function", "'nomodule'")),
    "custom metric not a number": Case("train", custom_metric_not_a_number, ("textmetric:score", "not a number")),
    "unknown loss": Case("train", unknown_loss, ("train.loss", "'hinge'", "focal")),
    "SWA longer than training": Case("train", swa_longer_than_training, ("train.swa.epochs", "last N", "99")),
    "unknown augment policy": Case("train", unknown_policy, ("augment.policy", "'strong'", "randaugment")),
    "unknown custom transform": Case("train", unknown_transform, ("augment.custom[1]", "'Blurr'")),
    "unknown transform argument": Case("train", unknown_transform_argument, ("augment.custom[0]", "rotat")),
})  # fmt: skip


# pseudo-labels and OOF distillation sources (issue 14, items 1-2)
def source_case(key: str = "pseudo", name: str = "src", **scores: object) -> Callable[[Ctx], None]:
    """A finished source run `src` (scores.json keys replaced by `scores`); the experiment takes train.<key>.from."""

    def breaks(c: Ctx) -> None:
        c.ok("folds")
        write_source_run(c.project, **scores)
        c.edit_experiment("train", **{key: {"from": name}})

    return breaks


def source_on_other_folds(c: Ctx) -> None:
    source_case()(c)
    c.edit_competition("folds", seed=1)
    c.ok("folds")  # folds.csv rebuilt (nothing trained yet): the source's folds are not these


def source_with_other_test_ids(c: Ctx) -> None:
    source_case()(c)
    test = c.project / "data/runs/toy/src/test.csv"
    pd.read_csv(test).iloc[1:].to_csv(test, index=False)


def source_unfinished(c: Ctx) -> None:
    source_case()(c)
    (c.project / "data/runs/toy/src/scores.json").unlink()


def pseudo_round_without_from(c: Ctx) -> None:
    c.ok("folds")


def pseudo_round_from_unknown(c: Ctx) -> None:
    c.ok("folds")
    c.args += ["--from", "nosuch"]


CASES.update({
    "pseudo source unknown": Case("train", source_case(name="nosuch"), ("train.pseudo.from", "'nosuch'",
                                                                       "no experiment run", "make all")),
    "pseudo source unfinished": Case("train", source_unfinished, ("'src'", "unfinished", "scores.json")),
    "pseudo source on other folds": Case("train", source_on_other_folds, ("'src'", "another folds.csv",
                                                                          "retrain the source")),
    "pseudo source without a folds digest": Case("train", source_case(folds_digest=None),
                                                 ("'src'", "no folds.csv digest", "re-run its ensemble")),
    "pseudo source with other test ids": Case("train", source_with_other_test_ids, ("'src'", "test ids", "5 rows")),
    "pseudo source is a SAMPLE run": Case("train", source_case(name="src-sample10"), ("SAMPLE run", "full run",
                                                                                      "'src'")),
    "pseudo source recorded another SAMPLE": Case("train", source_case(sample=10), ("SAMPLE=10", "SAMPLE=0")),
    "pseudo source is the experiment itself": Case("train", source_case(name="tiny"), ("'tiny'", "itself")),
    "distillation source from a partial ensemble": Case("train", source_case("soft_labels", partial=True),
                                                        ("train.soft_labels.from", "ensemble every fold")),
    "pseudo on multi-label data": Case("train", source_case(), ("train.pseudo", "multi-label"),
                                       layout="multilabel_text"),
    "pseudo threshold above 1": Case("train", overrides("train.pseudo.threshold=1.5"),
                                     ("train.pseudo.threshold", "1.5")),
    "make pseudo without FROM": Case("pseudo", pseudo_round_without_from, ("FROM=",)),
    "make pseudo from an unknown source": Case("pseudo", pseudo_round_from_unknown, ("'nosuch'", "no experiment run")),
})  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line(
    name: str, project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if name == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_competition_yaml(project, case.layout)
    config = tiny_experiment(project)
    args = [case.stage, "--config", str(config)] + (["--fold", "0"] if case.stage in ("train", "predict") else [])
    ctx = Ctx(project, capsys, monkeypatch, case.stage, config, args)
    case.breaks(ctx)
    if case.root_can_write and os.access(project / "data" / "processed", os.W_OK):
        pytest.skip("chmod does not stop this user (root) from writing; 'output folder is a file' covers it")
    output = project / OUTPUTS[case.stage]
    before = output.read_bytes() if output.is_file() else None  # a broken output the case planted stays as it was
    started = time.monotonic()
    try:
        if case.cli:
            result = run_cli(*ctx.args, cwd=project)
        else:
            result = run_main(capsys, *ctx.args)
    finally:
        if case.root_can_write:
            (project / "data" / "processed").chmod(0o755)

    elapsed = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    # one `error:` line, and it is the last thing said (progress lines of work done before it may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert errors[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in case.expect:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert (output.read_bytes() if output.is_file() else None) == before
    assert before is not None or not output.exists()
    assert not [p for p in project.rglob("*.tmp")], "a temp file was left behind"
    assert not ctx.marker.exists(), "a pickle payload ran"
    assert case.within is None or elapsed < case.within, f"took {elapsed:.0f} s"


def test_the_battery_is_big_enough() -> None:
    assert len(CASES) >= 30


def test_payload_would_run_under_plain_pickle(tmp_path: Path) -> None:
    """The payload is real: plain unpickling runs it, so its absence above means it was refused."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("head", [1000, 5])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_file_with_another_head_just_works(tmp_path: Path, head: int, suffix: str) -> None:
    """Fine-tuning: a backbone's weights with any class count load, and only the classifier starts fresh."""
    import timm

    from pipeline.core.config import ModelConfig
    from pipeline.training.model import build_model

    source = timm.create_model(TINY_MODEL, pretrained=False, num_classes=head)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model(ModelConfig(name=TINY_MODEL, pretrained=str(path)), num_classes=3)
    loaded, original = model.state_dict(), source.state_dict()
    assert loaded["classifier.weight"].shape[0] == 3
    backbone = [k for k in original if not k.startswith("classifier.")]
    assert all(torch.equal(loaded[k], original[k]) for k in backbone)


def test_one_line_unwraps_a_dataloader_worker_error_and_joins_others() -> None:
    from pipeline.core.cli import one_line

    wrapped = (
        "Caught UserError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 3, in load\n    raise UserError(...)\n'
        "pipeline.core.errors.UserError: image a.png is truncated; replace the file\n"
    )
    assert one_line(wrapped) == "image a.png is truncated; replace the file"
    assert one_line("first part\n  second part\n") == "first part second part"
    assert one_line("plain") == "plain"
