"""train: fine-tune a timm backbone on one fold (or each fold in turn), with the recipe in pipeline.training.

Reads data/processed/<comp>/folds.csv and the images under the competition's raw folder; writes, per
fold, data/runs/<comp>/<exp>/fold<k>/: log.csv (one row per epoch), oof_plain.csv (validation-row
probabilities of the saved weights, no TTA), and model.safetensors last (the stage's output, with the
config fingerprint in its metadata). With train.ema on, the EMA weights are scored beside the raw ones
at the epochs where the score decides something (pipeline.training.hot_path.ema_scored: every epoch with
keep: best or early stopping, else the last) and saved unless the raw ones score better; with train.keep: best
the saved weights are those of the best-scoring epoch. While training, fold<k>/work/last.pt holds
everything needed to resume (pipeline.training.checkpoint); re-running the same command resumes from it, and
refuses to when the config changed. SIGTERM/SIGINT and train.time_budget save a checkpoint and stop (exit 75).
`train.lr: auto` takes the LR range test's suggestion (pipeline.training.lr_range), running the range test first
if needed.
"""

from __future__ import annotations

import argparse

from pipeline.training import distributed
from pipeline.training.loop import train_fold


def run(args: argparse.Namespace) -> None:
    distributed.run_folds(args, train_fold, per_member=True)
