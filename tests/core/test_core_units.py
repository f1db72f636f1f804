"""Unit tests of core's one-rule modules: paths (the only path builder), artifacts (the only writer, atomic), locks
(one holder per fold or sweep) and events (training announces, trackers hear)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from pipeline.core import artifacts, events, locks, paths
from pipeline.core.errors import UserError


def test_paths_of_an_experiment_a_sample_and_a_member(project: Path) -> None:
    out = paths.Paths("toy", "tiny")
    assert out.run == project / "data/runs/toy/tiny" and out.folds_csv == project / "data/processed/toy/folds.csv"
    assert (
        out.weights(2) == out.run / "fold2/model.safetensors" and out.submission == project / "submissions/toy/tiny.csv"
    )
    sample = paths.Paths("toy", "tiny", 100)
    assert sample.run.name == "tiny-sample100" and sample.submission.name == "tiny-sample100.csv"
    assert out.member(43).weights(1) == out.run / "fold1/seed43/model.safetensors"
    assert out.fold_dir(paths.REFIT) == out.run / "refit"
    assert paths.experiment_config("toy", "tiny") == project / "configs/toy/tiny.yaml"
    assert paths.blend_config("toy") == project / "configs/toy/blend.yaml"
    assert paths.Paths("toy").blend_oof("duo") == project / "data/runs/toy/blend/duo/oof.csv"


def test_an_interrupted_write_leaves_no_file_and_a_finished_one_is_whole(project: Path) -> None:
    target = project / "out/table.csv"
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and not list(target.parent.iterdir())  # no temp left behind either
    artifacts.write_text(target, "whole\n")
    assert target.read_text() == "whole\n"
    artifacts.write_json(project / "out/x.json", {"a": 1})
    assert artifacts.read_json(project / "out/x.json") == {"a": 1}


def _hold(path: str, ready: multiprocessing.Event, release: multiprocessing.Event) -> None:
    with locks.exclusive(Path(path), "sweep s", "sweep"):
        ready.set()
        release.wait(10)


def test_a_lock_held_by_another_process_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UserError, match=rf"sweep s is busy: `sweep` holds .* \(pid {holder.pid} "):
            with locks.exclusive(path, "sweep s", "sweep"):
                pass
    finally:
        release.set()
        holder.join(30)
    with locks.fold_lock(path, 3, "train"):  # released when its holder exited
        assert f'"pid": {os.getpid()}' in path.read_text()


def test_events_reach_each_subscriber_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_handlers", {})
    heard = []

    def handler(**payload: object) -> None:
        heard.append(payload)

    events.subscribe("fold_trained", handler)
    events.subscribe("fold_trained", handler)
    events.emit("fold_trained", fold=1)
    events.emit("other", fold=2)
    assert heard == [{"fold": 1}]


def test_training_announces_a_fold_and_the_command_layer_subscribes_the_trackers(monkeypatch) -> None:  # noqa: ANN001
    from pipeline.commands.cli import subscribe_trackers
    from pipeline.reporting import tracking

    monkeypatch.setattr(events, "_handlers", {})
    subscribe_trackers()
    assert events._handlers["fold_trained"] == [tracking.sync_fold]
