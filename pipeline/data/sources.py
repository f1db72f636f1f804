"""The source of pseudo-labels (train.pseudo.from) or of distillation targets (train.soft_labels.from): an experiment
run or a blend of this competition, found by name, checked for consistency, and identified by its files' digests.

Reads data/runs/<comp>/<exp>[-sampleN]/ or data/runs/<comp>/blend/<name>/ (scores.json, oof.csv, test.csv), this
competition's folds.csv and test listing; writes nothing. A source must be finished (scores.json), made on the same
folds.csv (ensemble and blend record its digest as `folds_digest`) and the same test ids, with the same SAMPLE size,
must not be the experiment itself (nor a blend holding it), and, where its OOF is needed (distillation), must have a
complete OOF (no partial ensemble; ensemble.refit changes test predictions only). Each refusal is one UserError
naming the source and the fix. The settings are in the config fingerprint
(pipeline.core.config.FINGERPRINTED_WHEN_ON); the source's identity (`sources_stamp`: its oof/test digests) travels
beside it in each fold's resume checkpoint and weights (pipeline.training.loop), so a source whose predictions
changed is never trained on silently. The config fingerprint itself stays free of file reads: predict and the Kaggle
Kernel (which has no source) recompute it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.core import artifacts, paths
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv

if TYPE_CHECKING:
    from pipeline.core.schema import Config

SAMPLE_SUFFIX = re.compile(r"-sample(\d+)$")


@dataclass(frozen=True)
class Source:
    """A resolved source: its name, kind (experiment | blend), folder and scores.json."""

    key: str  # the config key that named it: train.pseudo or train.soft_labels
    name: str
    kind: str
    run: Path
    scores: dict[str, Any]

    @property
    def oof(self) -> Path:
        return self.run / "oof.csv"

    @property
    def test(self) -> Path:
        return self.run / "test.csv"

    @property
    def remake(self) -> str:
        """The command that (re)makes this source's scores.json."""
        if self.kind == "blend":
            return f"make blend COMP={self.run.parent.parent.name}"
        match = SAMPLE_SUFFIX.search(self.run.name)
        sample = f" --set sample={match.group(1)}" if match else ""
        config = f"configs/{self.run.parent.name}/{SAMPLE_SUFFIX.sub('', self.run.name)}.yaml"
        return f"python -m pipeline ensemble --config {config}{sample}"


def finished_files(comp: str, names: list[str], sample: int) -> list[Path]:
    """The scores.json (written last by ensemble and blend) of each named source that exists: Make's prerequisites of
    a pseudo / distillation experiment's folds, so a source that re-ran sends them back to train."""
    found = []
    for name in names:
        for scores in (paths.Paths(comp, name, sample).scores, paths.Paths(comp).blend_scores(name)):
            if scores.is_file():
                found.append(scores)
                break
    return found


def source_keys(cfg: Config) -> dict[str, str]:
    """{"pseudo": name, "soft_labels": name} for the keys that are on."""
    named = {"pseudo": cfg.train.pseudo.from_, "soft_labels": cfg.train.soft_labels.from_}
    return {key: name for key, name in named.items() if name}


def locate(cfg: Config, key: str, name: str) -> Source:
    """The experiment run or blend named `name`, refused when it is the experiment itself, missing or unfinished."""
    where = f"train.{key}.from: {name!r}"
    if name == cfg.exp or SAMPLE_SUFFIX.sub("", name) == cfg.exp:
        raise UserError(f"{where} is this experiment itself; name another finished experiment or blend")
    if SAMPLE_SUFFIX.search(name) and not cfg.sample:
        full = SAMPLE_SUFFIX.sub("", name)
        raise UserError(f"{where} is a SAMPLE run and this is a full run; use the full run {full!r} as the source, "
                        "or run this experiment with the same SAMPLE")  # fmt: skip
    run, blend = paths.Paths(cfg.comp, name, cfg.sample).run, paths.Paths(cfg.comp).blend_dir(name)
    if run.is_dir():
        source = Source(key, name, "experiment", run, {})
    elif blend.is_dir():
        if cfg.sample:
            raise UserError(f"{where} is a blend (full runs only) and this is a SAMPLE={cfg.sample} run; "
                            "run without SAMPLE, or name a sample run of an experiment")  # fmt: skip
        source = Source(key, name, "blend", blend, {})
    elif cfg.sample and paths.Paths(cfg.comp, name).run.is_dir():
        raise UserError(f"{where} is a full run and this is a SAMPLE={cfg.sample} run (no {run}); run the source "
                        f"with SAMPLE={cfg.sample} first, or this experiment without SAMPLE")  # fmt: skip
    else:
        raise UserError(f"{where}: no experiment run ({run}) or blend ({blend}) of that name; run it first "
                        f"(make all CONFIG=configs/{cfg.comp}/{name}.yaml, or make blend)")  # fmt: skip
    missing = [p for p in (source.run / "scores.json", source.oof, source.test) if not p.exists()]
    if missing:
        raise UserError(
            f"{where} is unfinished ({missing[0]} not found); run `{source.remake}` first (make all for an experiment)"
        )
    scores = json.loads((source.run / "scores.json").read_text())
    return Source(key, name, source.kind, source.run, scores)


def check_consistent(cfg: Config, source: Source) -> None:
    """The source was made on this competition's folds.csv, test ids and SAMPLE size, and does not contain this
    experiment; distillation also needs its whole OOF."""
    where, out, scores = f"train.{source.key}.from: {source.name!r}", paths.for_config(cfg), source.scores
    if scores.get("sample", cfg.sample) != cfg.sample:
        raise UserError(f"{where} is a SAMPLE={scores['sample']} run and this one has SAMPLE={cfg.sample}; "
                        "use a source with the same SAMPLE")  # fmt: skip
    if cfg.exp in (scores.get("weights") or {}):
        raise UserError(f"{where} is a blend that contains this experiment ({cfg.exp}); name a source without it")
    if "folds_digest" not in scores:
        raise UserError(f"{where}: its scores.json records no folds.csv digest (made before sources were "
                        f"checked); re-run its ensemble: `{source.remake}`")  # fmt: skip
    if not out.folds_csv.exists():
        raise UserError(f"{out.folds_csv} not found; run `make folds CONFIG=...` first")
    if scores["folds_digest"] != artifacts.file_digest(out.folds_csv):
        raise UserError(f"{where} was made on another folds.csv than {out.folds_csv}; retrain the source on these "
                        f"folds (`make all` for it), or rebuild folds as the source had them")  # fmt: skip
    if not out.test_csv.exists():
        raise UserError(f"{out.test_csv} not found; run `make folds CONFIG=...` first")
    expected, got = ids(out.test_csv, "test listing"), ids(source.test, f"{source.name} test probabilities")
    if len(got) != len(expected) or set(got) != set(expected):
        raise UserError(f"{where}: its test ids ({source.test}, {len(got)} rows) are not this competition's "
                        f"({out.test_csv}, {len(expected)} rows); re-run the source's predict, ensemble")  # fmt: skip
    if source.key == "soft_labels" and scores.get("partial"):
        raise UserError(f"{where}: its OOF covers only folds {scores.get('folds_used')}; ensemble every fold of "
                        "the source first")  # fmt: skip


def ids(path: Path, what: str) -> pd.Series:
    """The id column of a listing or prediction file."""
    frame = read_csv(path, what)
    if "id" not in frame.columns:
        raise UserError(f"{what} {path} has no id column; re-run the stage that wrote it")
    return frame["id"]


def resolve(cfg: Config, key: str) -> Source:
    """The checked source of train.<key> (pseudo or soft_labels)."""
    source = locate(cfg, key, source_keys(cfg)[key])
    check_consistent(cfg, source)
    return source


def sources_stamp(cfg: Config) -> str:
    """The sources' identities as one string ("" with both keys off): fold weights and resume checkpoints carry it
    beside the config fingerprint, so predictions from a source that re-ran are never trained on silently."""
    identities = source_identities(cfg)
    return json.dumps(identities, sort_keys=True) if identities else ""


def source_identities(cfg: Config) -> dict[str, dict[str, str]]:
    """{key: {name, kind, oof, test digests}} for each source that is on."""
    identities = {}
    for key in source_keys(cfg):
        source = resolve(cfg, key)
        identities[key] = {"name": source.name, "kind": source.kind, "oof": artifacts.file_digest(source.oof)[:16],
                           "test": artifacts.file_digest(source.test)[:16]}  # fmt: skip
    return identities
