"""A Kaggle image-classification pipeline: each stage reads and writes files at fixed paths.

`python -m pipeline <command>` (pipeline.core.cli holds the command table and the one error contract; every make
target calls it). Packages by concern; a stage imports building blocks, never another stage, and nothing imports in
a cycle (tests/test_architecture.py checks both):

    core/       schema (config sections, defaults, ranges), config (loading, overrides, checks), paths (the only
                place artifact paths are built), artifacts (the only writer, atomic),
                errors, metrics (and "is higher better"), progress, provenance, cli, locks, run_config,
                bag (seed bags: a fold's members); no torch
    data/       tables (CSV readers, image decoding), init (layout inference), folds, folds_record, cache, loader,
                augment, augment_policies, demo, raw_data (hand-placed competition files), sources and soft_targets
                (pseudo-labels and distillation: the source run, the extra rows and dense targets)
    training/   model, recipe, budget (budget-aware defaults), losses, train, lr_find, lr_range, checkpoint,
                distributed, weights, fold (one fold's data and model), runtime (AMP, seeding, activation), refit,
                pseudo (make pseudo)
    inference/  tta, tta_auto (effective_views: the TTA views actually used), predict, fold_model, predictions,
                seed_bag (a fold's members averaged), ensemble, blend, blending (the one blend function, also in the
                Kernel), submission, validate, view_scores
    kaggle/     client, auth, retry, wait, download, submit, submit_kernel (kaggle-submit), leaderboard (scores),
                bundle, bundle_format, push (kaggle-push), wheels, kernel_predict (runs inside the Kernel), kernel
                (the script shipped as kernel.py)
    reporting/  report, plots, interpret, gradcam, experiments, planner, doctor, summary, tracking
    tuning/     sweep, sweep_spec, sweep_results (Optuna sweeps)
    benchmarks/ data_path (make bench), recipe_bench and starter (make bench-recipe), fashion, coverage_variants,
                techniques (make bench-techniques)
    api.py      Experiment: the same stages from a notebook
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
