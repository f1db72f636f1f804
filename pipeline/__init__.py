"""A Kaggle image-classification pipeline: each stage reads and writes files at fixed paths.

Stages (one module each, `python -m pipeline <stage>`): download, init, folds, train, predict, ensemble,
submission, submit, and around them lr_find, report, blend, scores, experiments, bundle, kaggle_push, kernel...
A stage imports building blocks, never another stage (tests/test_architecture.py checks it):
config, paths, artifacts, errors, metrics, cli (commands and the one error contract), data, folds table and
fold data (fold), cache, loader, augment, model, weights, recipe, runtime (AMP, activation, seeding),
checkpoint, lr_range, inference (fold models, TTA prediction), tta, tta_auto (effective_views), predictions,
view_scores, planner, provenance.
"""

import os

# albumentations 2.0.8 asks the package index for a newer version at every import unless this is set:
# offline Kaggle kernels would wait on it, and it leaks usage. Set before anything imports albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# download() and init() stay in pipeline.api: here they would shadow the pipeline.download/init modules.
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
