"""bench-recipe ablations for augmentation policies and stochastic depth, each one change to the default recipe at
equal epochs (pipeline.benchmarks.recipe_bench adds them to ABLATIONS: `--ablate aug_light aug_medium ...`)."""

from __future__ import annotations

from typing import Any

COVERAGE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "aug_light": ("+ augment.policy light (crop 0.8-1, flips)", {"augment": {"policy": "light"}}),
    "aug_medium": ("+ augment.policy medium (affine, colour jitter, dropout)", {"augment": {"policy": "medium"}}),
    "aug_heavy": ("+ augment.policy heavy (medium + distortions, blur/noise)", {"augment": {"policy": "heavy"}}),
    "aug_randaugment": ("+ augment.policy randaugment (2 ops, magnitude 9)", {"augment": {"policy": "randaugment"}}),
    "drop_path": ("+ model.drop_path_rate 0.1 (stochastic depth)", {"model": {"drop_path_rate": 0.1}}),
}
