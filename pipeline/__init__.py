"""A Kaggle image-classification pipeline: each stage reads and writes files at fixed paths.

`python -m pipeline <command>`: the command layer (pipeline.commands) holds one record per command, read by the CLI,
the notebook API (pipeline.api), `make help` and the docs. Packages by concern, in layers that point one way (a
module imports its own layer or lower ones, never higher; tests/test_architecture.py checks it, function-level and
importlib imports included):

    core < data < training < inference < kaggle, reporting < tuning, benchmarks < api, commands

    core/        schema (config sections, defaults, choice lists), config, paths (the only place artifact paths are
                 built), artifacts (the only writer, atomic), errors, events, locks, budget, metrics, cli; no torch
    data/        tables, layout (init's inference), folds, cache + decode (every core) + listing (what was checked),
                 loader, augment + augment_policies (one policy table)
    training/    model, optim, schedule, averaging (EMA, SWA, the kept epoch), losses, train, checkpoint, distributed
    inference/   tta, predict, ensemble, thresholds, blend + blend_apply (the Kernel's blend step), submission
    kaggle/      client, download, submit, bundle, push, wait, leaderboard, kernel (the script a bundle ships)
    reporting/   report, plots, experiments, planner, doctor, summary, tracking (hears training's events)
    tuning/      Optuna sweeps;  benchmarks/  make bench, bench-recipe, bench-techniques, bench-scale
    commands/    the command records, the CLI, init's command, kernel_predict (runs inside the Kernel)

docs/architecture.md holds the full map, generated from each module's docstring.
"""

import os

# albumentations 2.0.8 asks the package index for a newer version at every import unless this is set:
# offline Kaggle kernels would wait on it, and it leaks usage. Set before anything imports albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# download() and init() stay in pipeline.api: here they would shadow the pipeline.kaggle.download/init modules.
# The notebook API (pipeline.api), imported on first use so `import pipeline` stays light (no torch).
_LAZY = {
    "Experiment": "pipeline.api",
    "PipelineError": "pipeline.api",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
