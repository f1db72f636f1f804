"""Config is typed, small and loud: defaults in code, unknown keys and wrong types fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import TRAINING_SECTIONS, fingerprint, load_config, parse_override
from pipeline.core.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    write(tmp_path / "comp" / "competition.yaml", "data:\n  classes: [a, b]\nmetric: accuracy\nfolds:\n  n_folds: 3\n")
    write(tmp_path / "comp" / "exp.yaml", "model:\n  name: resnet18\ntrain:\n  lr: 1e-3\n")
    return tmp_path / "comp"


def test_merges_competition_and_experiment_with_defaults(configs: Path) -> None:
    cfg = load_config(configs / "exp.yaml")
    assert (cfg.comp, cfg.exp) == ("comp", "exp")
    assert cfg.folds.n_folds == 3 and cfg.data.classes == ["a", "b"]
    assert cfg.model.name == "resnet18"
    assert cfg.train.lr == pytest.approx(1e-3)  # PyYAML reads 1e-3 as a string; the float field converts it
    assert cfg.train.epochs == 5  # default from code


def test_overrides_apply_with_types(configs: Path) -> None:
    cfg = load_config(configs / "exp.yaml", ["train.epochs=2", "model.pretrained=false", "tta.views=[identity]"])
    assert cfg.train.epochs == 2 and cfg.model.pretrained is False and cfg.tta.views == ["identity"]
    assert load_config(configs / "exp.yaml", ["model.pretrained=w.pth"]).model.pretrained == "w.pth"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.epoch=2"], "train.epoch"),
        (["train.epochs=two"], "train.epochs"),
        (["train.lr=fast"], "train.lr"),
        (["train.amp=maybe"], "train.amp"),
        (["modle.name=x"], "modle"),
        (["tta.views=hflip"], "tta.views"),
        (["tta.views=[spin]"], "tta.views[0]"),
        (["metric=auc_of_doom"], "metric"),
        (["device=tpu"], "device"),
        (["folds.n_folds=1"], "folds.n_folds"),
        (["data.task=regression"], "data.task"),
        (["train.batch_size=0"], "train.batch_size"),
        (["train.warmup_epochs=-1"], "train.warmup_epochs"),
        (["train.head_init_scale=-0.5"], "train.head_init_scale"),
        (["train.ema_decay=1.5"], "train.ema_decay"),
        (["augment.scale_min=0"], "augment.scale_min"),
        (["augment.ratio_range=-1"], "augment.ratio_range"),
    ],
)
def test_bad_values_fail_naming_the_key(configs: Path, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(configs / "exp.yaml", overrides)
    assert key in str(info.value)


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train..lr=1", ""])
def test_override_syntax(text: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def test_malformed_yaml_names_file_and_line(configs: Path) -> None:
    write(configs / "bad.yaml", "model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: malformed YAML"):
        load_config(configs / "bad.yaml")


def test_missing_file_and_misplaced_keys(configs: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(configs / "nope.yaml")
    write(configs / "competition.yaml", "model:\n  name: resnet18\n")
    with pytest.raises(ConfigError, match="competition.yaml: unknown key"):
        load_config(configs / "exp.yaml")


def test_fingerprint_tracks_training_sections_only(configs: Path) -> None:
    base = load_config(configs / "exp.yaml")
    assert fingerprint(base, TRAINING_SECTIONS) == fingerprint(load_config(configs / "exp.yaml"), TRAINING_SECTIONS)
    changed_tta = load_config(configs / "exp.yaml", ["tta.views=[identity]"])
    changed_lr = load_config(configs / "exp.yaml", ["train.lr=0.1"])
    assert fingerprint(changed_tta, TRAINING_SECTIONS) == fingerprint(base, TRAINING_SECTIONS)
    assert fingerprint(changed_lr, TRAINING_SECTIONS) != fingerprint(base, TRAINING_SECTIONS)
