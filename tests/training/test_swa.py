"""train.swa (issue 14, item 5): the saved soup is the mean of the last epochs' weights with BatchNorm statistics
re-estimated, kept only when it validates at least as well as the kept epoch, resumable, recorded in the facts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers.builders import fingerprint_before_newer_keys, run_main, tiny_experiment
from helpers.chain import run_chain, write_competition_yaml
from pipeline.core.config import (
    TRAINING_SECTIONS,
    ConfigError,
    SwaConfig,
    TrainConfig,
    fingerprint,
    load_config,
)
from pipeline.training import averaging

RUN = "data/runs/toy/tiny"
SWA = {"epochs": 3, "lr": 0.01, "keep": "last", "deterministic": True, "swa": {"epochs": 2}}


def train_recording(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[dict[str, torch.Tensor]]]:
    """Train fold 0 with SWA over the last 2 of 3 epochs; returns the config and the raw weights at each epoch end."""
    import pipeline.training.loop as train_module

    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, train=SWA)
    seen: list[dict[str, torch.Tensor]] = []
    original = train_module.end_epoch

    def spy(run, row):  # noqa: ANN001, ANN202 - passes through train's own arguments
        seen.append({k: v.detach().clone() for k, v in run.f.model.state_dict().items()})
        return original(run, row)

    monkeypatch.setattr(train_module, "end_epoch", spy)
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    return config, seen


def saved(project: Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = project / RUN / "fold0/model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        facts = json.loads(f.metadata()["recipe"])
    return load_file(str(path)), facts


def parameter_names(weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """(parameters, BatchNorm running statistics) of the tiny model's state dict."""
    stats = [k for k in weights if k.endswith(("running_mean", "running_var"))]
    params = [k for k in weights if weights[k].is_floating_point() and k not in stats]
    return params, stats


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
@pytest.mark.parametrize("wins", [True, False])
def test_swa_saves_the_mean_of_the_last_epochs_only_when_not_worse(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, wins: bool
) -> None:
    config, seen = train_recording(project, capsys, monkeypatch)
    decided: list[tuple[float, float]] = []
    monkeypatch.setattr(averaging, "swa_wins", lambda metric, swa, kept: decided.append((swa, kept)) or wins)
    result = run_main(capsys, "train", "--config", str(config), "--fold", "0")
    assert result.returncode == 0, result.stderr
    weights, facts = saved(project)
    params, stats = parameter_names(weights)
    assert len(seen) == 3 and len(decided) == 1 and params and stats
    assert facts["swa"]["epochs"] == [2, 3] and facts["swa"]["averaged"] == 2 and facts["swa"]["kept"] is wins
    if wins:
        assert facts["weights"] == "swa"
        for k in params:
            torch.testing.assert_close(weights[k], (seen[1][k] + seen[2][k]) / 2)
        assert any(not torch.equal(weights[k], seen[2][k]) for k in params)
        assert any(not torch.allclose(weights[k], seen[2][k]) for k in stats)  # re-estimated, not the last epoch's
    else:
        assert facts["weights"] == "raw" and all(torch.equal(weights[k], seen[2][k]) for k in params + stats)
    selection = averaging.oof_selection(load_config(config))
    assert selection["swa_chosen_on_fold"] and selection["folds"][0]["swa"]["kept"] is wins


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_swa_resumes_with_its_average_after_a_kill(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.training.loop as train_module

    config, seen = train_recording(project, capsys, monkeypatch)
    original = train_module.apply_swa

    def killed(run):  # noqa: ANN001, ANN202 - stops the process between the last epoch and the soup
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "apply_swa", killed)
    assert run_main(capsys, "train", "--config", str(config), "--fold", "0").returncode != 0  # interrupted
    assert (project / RUN / "fold0/work/last.pt").exists() and not (project / RUN / "fold0/model.safetensors").exists()
    monkeypatch.setattr(train_module, "apply_swa", original)
    monkeypatch.setattr(averaging, "swa_wins", lambda *args: True)
    assert run_main(capsys, "train", "--config", str(config), "--fold", "0").returncode == 0
    weights, facts = saved(project)
    assert len(seen) == 3 and facts["swa"]["averaged"] == 2  # the resumed run trained no epoch again
    for k in parameter_names(weights)[0]:
        torch.testing.assert_close(weights[k], (seen[1][k] + seen[2][k]) / 2)


def test_swa_rule_follows_the_metric_direction_and_the_last_epochs() -> None:
    assert averaging.swa_wins("accuracy", 0.8, 0.8) and not averaging.swa_wins("accuracy", 0.7, 0.8)
    assert averaging.swa_wins("log_loss", 0.3, 0.4) and not averaging.swa_wins("log_loss", 0.5, 0.4)
    cfg = TrainConfig(epochs=5, swa=SwaConfig(epochs=2))
    assert [e for e in range(1, 6) if averaging.swa_takes(e, cfg)] == [4, 5]
    assert not any(averaging.swa_takes(e, TrainConfig(epochs=5)) for e in range(1, 6))


def test_swa_key_retrains_when_on_and_keeps_older_fingerprints(project: Path) -> None:
    write_competition_yaml(project, "csv")
    base = load_config(tiny_experiment(project, train={"epochs": 3}))
    older = fingerprint_before_newer_keys(base)
    assert fingerprint(base, TRAINING_SECTIONS) == older  # runs trained before the key existed stay valid
    on = copy.deepcopy(base)
    on.train.swa.epochs = 2
    assert fingerprint(on, TRAINING_SECTIONS) != fingerprint(base, TRAINING_SECTIONS)


def test_swa_longer_than_training_is_refused(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, train={"epochs": 2, "swa": {"epochs": 3}})
    result = run_main(capsys, "train", "--config", str(config), "--fold", "0")
    assert result.returncode == 2 and result.stderr.startswith("error: train.swa.epochs")
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError):
        load_config(config)
    assert load_config(config, ["train.swa.epochs=1"]).train.swa.epochs == 1  # the override form works too


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_swa_runs_through_the_chain_into_scores_json(project: Path, capsys: pytest.CaptureFixture) -> None:
    write_competition_yaml(project, "csv")
    config = tiny_experiment(project, train={"epochs": 2, "lr": 0.01, "swa": {"epochs": 2}})
    logs = run_chain(capsys, config)
    assert "SWA of epochs 1-2" in logs["train"]
    selection = json.loads((project / RUN / "scores.json").read_text())["oof_selection"]
    assert selection["swa_chosen_on_fold"] and len(selection["folds"]) == 2
    for fold in selection["folds"]:
        assert fold["swa"]["averaged"] == 2 and fold["weights"] == ("swa" if fold["swa"]["kept"] else "raw")
    assert (project / RUN / "test.csv").exists()  # predict and ensemble took the soup weights
