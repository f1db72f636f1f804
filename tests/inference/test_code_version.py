"""Predictions remember the pipeline code that made them (predict.json's `code`): predict redoes a fold made by other
code, and ensemble refuses to blend folds made by different versions instead of mixing them silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core import provenance
from pipeline.core.config import Config, DataConfig
from pipeline.core.errors import UserError
from pipeline.core.paths import for_config
from pipeline.inference import ensemble, predict


def _cfg() -> Config:
    return Config(data=DataConfig(classes=["a", "b"]), comp="toy", exp="tiny")


def _mark(cfg: Config, fold: int, code: str | None) -> None:
    marker = for_config(cfg).predict_marker(fold)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"code": code} if code else {}))


def test_folds_of_one_version_blend(project: Path) -> None:
    cfg = _cfg()
    for k in (0, 1):
        _mark(cfg, k, provenance.code_version())
    ensemble.check_one_code_version(cfg, [0, 1])


@pytest.mark.parametrize("other", ["0.0.9+0123456789ab", None])
def test_folds_of_two_versions_are_refused_naming_both(project: Path, other: str | None) -> None:
    cfg = _cfg()
    _mark(cfg, 0, provenance.code_version())
    _mark(cfg, 1, other)
    with pytest.raises(UserError, match=r"fold\(s\) 0 by .*; fold\(s\) 1 by (0.0.9\+0123456789ab|unrecorded)"):
        ensemble.check_one_code_version(cfg, [0, 1])


def test_a_fold_predicted_by_other_code_is_not_up_to_date(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg()
    out = for_config(cfg)
    out.fold_dir(0).mkdir(parents=True)
    for path in (out.oof(0), out.test_probs(0)):
        path.write_text("id,a,b\nx,0.5,0.5\n")
    identity = {"fingerprint": "f", "views": ["identity"]}
    monkeypatch.setattr(predict, "vouched_files", lambda *args: [])
    out.predict_marker(0).write_text(json.dumps({**identity, "code": provenance.code_version()}))
    assert predict.up_to_date(cfg, 0, identity)
    monkeypatch.setattr(predict, "code_version", lambda: "9.9.9")
    assert not predict.up_to_date(cfg, 0, identity)


def test_the_code_version_is_the_pipelines_not_the_projects(project: Path) -> None:
    """The user's project folder may be its own git repository: its commits must not change the code version."""
    import subprocess

    git = ["git", "-C", str(project), "-c", "user.email=u@example.com", "-c", "user.name=u"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "configs"], check=True)
    project_commit = provenance.git_commit(project)
    version = provenance.code_version()
    assert project_commit and version.startswith(__import__("pipeline").__version__)
    assert project_commit.removesuffix("-dirty") not in version
