"""The config a finished run was trained under, for the stages that describe or ship that run.

Reads configs/<comp>/<exp>.yaml (+ SET overrides) and the run's resolved config data/runs/<comp>/<exp>/config.yaml
(written by train). `make all CONFIG=x SET="..."` trains under the overrides, which are not in any file; a later
`make kaggle-bundle CONFIG=x` (or report, plan) without SET means "that run", so it gets the run's resolved config.
With an explicit SET the command line wins, and the stage's own checks refuse it when it contradicts the weights.
"""

from __future__ import annotations

import argparse
import logging

import yaml

from pipeline.core import paths
from pipeline.core.cli import config_from_args
from pipeline.core.config import Config, config_from_values, to_dict
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


def config_of_run(args: argparse.Namespace) -> Config:
    """--config (+ --set) when overrides are given or nothing was trained yet; else the run's resolved config."""
    cfg = config_from_args(args)
    resolved = paths.for_config(cfg).resolved_config
    if getattr(args, "overrides", None) or not resolved.is_file():
        return cfg
    try:
        values = yaml.safe_load(resolved.read_text())
        trained = config_from_values(values) if isinstance(values, dict) else None
    except (OSError, yaml.YAMLError, ConfigError) as exc:  # an older run's schema: the files are all there is
        log.warning("warning: %s is not readable as this version's config (%s); using %s", resolved, exc, args.config)
        return cfg
    if trained is None or (trained.comp, trained.exp) != (cfg.comp, cfg.exp):
        return cfg
    if to_dict(trained) != to_dict(cfg):
        log.info("using the config the run was trained under (%s), not %s as it reads now", resolved, args.config)
    return trained


def config_of_member(comp: str, exp: str, command: str) -> Config:
    """A blend member's config as `config_of_run` takes it for `--config configs/<comp>/<exp>.yaml` (no SET)."""
    from pipeline.core.errors import UserError

    config = paths.configs_dir(comp) / f"{exp}.yaml"
    if not config.is_file():
        raise UserError(f"{config} not found, but the blend lists {exp}; restore it or re-run `make blend COMP={comp}`")
    return config_of_run(argparse.Namespace(config=str(config), overrides=[], command=command))
