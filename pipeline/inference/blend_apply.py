"""How a blend of experiments turns member probabilities into its own: the one implementation that `make blend`
(pipeline.inference.blend) and a Kaggle Kernel running a blend bundle (pipeline.commands.kernel_predict) both call,
so the Kernel blends exactly as the blend did at home.

Inputs: members' probability tables (id + one column per class; ensemble's data/runs/<comp>/<exp>/test.csv or
oof.csv), the weights and the combine method that `make blend` chose (its scores.json: `weights`, `combine`).
Outputs: the blended table, and the submission frame in sample_submission's format (predictions.format_submission,
checked against sample_submission as the submission stage does). `check_current` says whether a blend's
scores.json still describes its members' files (the digests it recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipeline.core import artifacts, paths
from pipeline.core.config import BLEND_METHODS, Config, ConfigError
from pipeline.core.errors import UserError
from pipeline.data.tables import read_csv

# scores.json keys a blend bundle needs: without them the blend was made by an older version (re-run make blend)
RECORDED = ("members", "combine", "weights", "member_files")


@dataclass
class BlendConfig:
    """configs/<comp>/blend.yaml: the blend's name (its folder, submission and bundle), members and method."""

    name: str = "blend"
    experiments: list[str] = field(default_factory=list)
    method: str = "fitted"


def load_blend_config(path: Path) -> BlendConfig:
    """The one reader of blend.yaml (make blend, the staleness check, kaggle-bundle BLEND=, plan BLEND=)."""
    if not path.exists():
        raise UserError(
            f"{path} not found; write it with `experiments: [exp1, exp2]` and `method: {'|'.join(BLEND_METHODS)}`"
        )
    import yaml

    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping with experiments, method and name")
    unknown = sorted(set(values) - {"name", "experiments", "method"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: experiments, method, name")
    cfg = BlendConfig(**values)
    if cfg.method not in BLEND_METHODS:
        raise ConfigError(f"{path}: method {cfg.method!r} is not one of {', '.join(BLEND_METHODS)}")
    if not isinstance(cfg.experiments, list) or len(cfg.experiments) < 2:
        raise ConfigError(f"{path}: experiments must list at least two experiment names")
    return cfg


def check_name_free(comp: str, name: str, blend_yaml: Path) -> None:
    """A blend writes submissions/<comp>/<name>.csv: a name an experiment already uses would overwrite that
    experiment's submission (and confuse scores and bundles), so it is refused, naming the key to change."""
    experiment, scores = paths.experiment_config(comp, name), paths.Paths(comp, name).scores
    taken = experiment if experiment.is_file() else scores.parent if scores.is_file() else None
    if taken is not None or name in ("competition", "blend.yaml"):
        raise ConfigError(f"{blend_yaml}: name {name!r} is an experiment's ({taken or name}); its submission would be "
                          "overwritten; give the blend its own name, e.g. name: blend")  # fmt: skip


def combine(stack: np.ndarray, weights: np.ndarray, method: str) -> np.ndarray:
    """Blend (experiments, rows, classes) probabilities with `weights` (summing to 1)."""
    w = weights[:, None, None]
    if method == "geometric":
        blended = np.exp((w * np.log(np.clip(stack, 1e-7, 1.0))).sum(axis=0))
    elif method == "rank":
        ranks = np.stack([np.apply_along_axis(rankdata, 0, s) / len(s) for s in stack])
        blended = (w * ranks).sum(axis=0)
    else:
        blended = (w * stack).sum(axis=0)
    return blended


def normalise(blended: np.ndarray, task: str) -> np.ndarray:
    if task == "multi_label":
        return np.clip(blended, 0.0, 1.0)
    return blended / np.clip(blended.sum(axis=1, keepdims=True), 1e-12, None)


def apply(stack: np.ndarray, weights: np.ndarray, method: str, task: str) -> np.ndarray:
    """The blended, normalised probabilities of `stack` under the chosen weights and combine method."""
    return normalise(combine(stack, np.asarray(weights, dtype=float), method), task)


def blend_tables(tables: list[pd.DataFrame], names: list[str], weights: np.ndarray, method: str,
                 cfg: Config) -> pd.DataFrame:  # fmt: skip
    """id + blended class probabilities of the members' tables (same ids, same order: UserError otherwise)."""
    classes = cfg.data.classes
    for name, table in zip(names[1:], tables[1:], strict=True):
        if list(table["id"]) != list(tables[0]["id"]):
            raise UserError(f"blend: {name}'s test ids differ from {names[0]}'s; re-run predict on the same test set")
    stack = np.stack([t[classes].astype(float).to_numpy() for t in tables])
    frame = pd.DataFrame(apply(stack, weights, method, cfg.data.task), columns=classes)
    frame.insert(0, "id", tables[0]["id"].to_numpy())
    return frame


def member_files(comp: str, names: list[str]) -> dict[str, dict[str, str]]:
    """{experiment: {"oof": sha256, "test": sha256}} of the files a blend read: what makes its scores.json current."""
    found = {}
    for name in names:
        out = paths.Paths(comp, name)
        found[name] = {"oof": artifacts.file_digest(out.oof_all), "test": artifacts.file_digest(out.test_blend)}
    return found


def check_current(comp: str, name: str, scores: dict, blend_yaml: Path) -> None:
    """UserError when the blend's scores.json no longer describes its members (or blend.yaml): re-run make blend."""
    where = paths.Paths(comp).blend_scores(name)
    redo = f"re-run `make blend COMP={comp}`"
    missing = [key for key in RECORDED if key not in scores]
    if missing:
        raise UserError(f"{where} lacks {missing} (written by an older version); {redo}")
    if blend_yaml.is_file():
        current = load_blend_config(blend_yaml)
        if current.name == name and current.experiments != scores["members"]:
            raise UserError(f"{where} is stale: {blend_yaml} now lists {current.experiments}, the blend was "
                            f"made of {scores['members']}; {redo}")  # fmt: skip
        if current.name == name and current.method != scores.get("method"):
            raise UserError(f"{where} is stale: {blend_yaml} now says method {current.method!r}, "
                            f"the blend used {scores.get('method')!r}; {redo}")  # fmt: skip
    for member in scores["members"]:
        out = paths.Paths(comp, member)
        for key, path in (("oof", out.oof_all), ("test", out.test_blend)):
            if not path.is_file():
                raise UserError(f"{path} not found (blend member {member}); run `make ensemble "
                                f"CONFIG=configs/{comp}/{member}.yaml`, then {redo}")  # fmt: skip
            if artifacts.file_digest(path) != scores["member_files"].get(member, {}).get(key):
                raise UserError(f"{where} is stale: {path} changed since the blend was made; {redo}")


def read_members_oof(comp: str, members: list[str], classes: list[str], ids: list[str]) -> np.ndarray:
    """(members, rows, classes) OOF probabilities in `ids` order (folds.csv's)."""
    stack = []
    for member in members:
        oof = read_csv(paths.Paths(comp, member).oof_all, "oof").set_index("id")
        stack.append(oof.loc[ids, classes].astype(float).to_numpy())
    return np.stack(stack)
