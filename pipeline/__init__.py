"""A Kaggle image-classification pipeline: each stage reads and writes files at fixed paths.

Stages (one module each): download, init, folds, train, predict, ensemble, submission, submit.
Support modules: config, paths, artifacts, data, model, augment, tta, metrics.
"""

import os

# albumentations 2.0.8 asks the package index for a newer version at every import unless this is set:
# offline Kaggle kernels would wait on it, and it leaks usage. Set before anything imports albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
