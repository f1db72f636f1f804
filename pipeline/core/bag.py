"""Seed bags (`train.seeds: [42, 43, 44]`): which models a fold holds, and the config each one trains under.

Reads and writes nothing. With two or more seeds every fold is a bag of members, one per seed: member (k, s) trains
in fold<k>/seed<s>/ (pipeline.core.paths.Paths.member) under the experiment's config with train.seed = s and no
train.seeds, so its training fingerprint is the one a plain run with train.seed: s would have, and never depends
on the other seeds of the list (adding a seed retrains nothing). predict averages the members' probabilities into
the fold's oof.csv/test.csv, which every later stage reads as before. With no list (or one seed, which
pipeline.core.config turns into train.seed) a fold is one model in fold<k>/, exactly as before bags existed.
"""

from __future__ import annotations

import dataclasses

from pipeline.core.schema import Config


def bag_seeds(cfg: Config) -> list[int]:
    """The seeds of the bag, in the listed order; [] when folds are single models."""
    return list(cfg.train.seeds) if len(cfg.train.seeds) >= 2 else []


def members(cfg: Config) -> list[int | None]:
    """A fold's models: one per bag seed, or [None] (the fold itself) without a bag."""
    return list(bag_seeds(cfg)) or [None]


def member_config(cfg: Config, seed: int | None) -> Config:
    """The config member `seed` trains and predicts under: train.seed = seed, no train.seeds (None: cfg itself)."""
    if seed is None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=[]))


def first_member(cfg: Config) -> Config:
    """The bag's first member's config (lr-find runs once for a bag, on it); cfg itself without a bag."""
    seeds = bag_seeds(cfg)
    return member_config(cfg, seeds[0]) if seeds else cfg


def describe(fold: int, seed: int | None) -> str:
    """`fold 2` or `fold 2 seed 43`, for log lines and errors."""
    return f"fold {fold}" if seed is None else f"fold {fold} seed {seed}"
