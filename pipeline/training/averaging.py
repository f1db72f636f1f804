"""Which weights a fold keeps: model EMA (timm.utils.ModelEmaV3), SWA (torch.optim.swa_utils), the epoch kept
(`train.keep`: last or best, raw or EMA), and what choosing on the scored fold gained (`oof_selection`, scores.json).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from pipeline.core.budget import budget_ema_decay
from pipeline.core.config import Config, TrainConfig
from pipeline.core.metrics import goodness, is_better


def build_ema(model: torch.nn.Module, cfg: TrainConfig, total_updates: int = 0) -> ModelEmaV3 | None:
    """timm's EMA with warmup (decay 1 - (1 + step)^-2/3, capped at the budget's ema_decay)."""
    return ModelEmaV3(model, decay=budget_ema_decay(cfg, total_updates), use_warmup=True) if cfg.ema else None


def build_swa(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """train.swa: an equal-weight running mean of the weights at the end of each of the last N epochs (torch's
    AveragedModel; parameters only: BatchNorm statistics are re-estimated by `swa_finish`)."""
    return torch.optim.swa_utils.AveragedModel(model) if cfg.swa.epochs else None


def swa_takes(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the epoch that just finished (1-based) is one of the last train.swa.epochs."""
    return bool(cfg.swa.epochs) and epoch > cfg.epochs - cfg.swa.epochs


def swa_finish(
    swa: torch.optim.swa_utils.AveragedModel, loader: Any, device: torch.device, cfg: TrainConfig
) -> torch.nn.Module:
    """The averaged model with BatchNorm running statistics recomputed over one pass of the training batches
    (unless train.freeze_bn keeps them as they were)."""
    if not cfg.freeze_bn:
        torch.optim.swa_utils.update_bn(loader, swa.module, device)
    return swa.module


def swa_wins(metric: str, swa_value: float, kept_value: float) -> bool:
    """The soup replaces the kept weights only when it validates at least as well (as EMA is chosen)."""
    return not is_better(metric, kept_value, swa_value)


class BestKeeper:
    """Which weights a fold saves: the best-scoring epoch's (keep: best) or the last one's, and early stopping.

    Its state (weights, validation probabilities, scores, counters) goes into the resume checkpoint.
    """

    def __init__(self, metric: str, keep: str) -> None:
        self.metric = metric
        self.keep = keep
        self.best_score: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.saved_epoch = 0
        self.source = "raw"  # raw | ema: which weights `weights` are
        self.weights: dict[str, torch.Tensor] = {}
        self.probs = np.zeros((0, 0))

    def offer(self, epoch: int, value: float, probs: np.ndarray, state: dict[str, torch.Tensor], source: str) -> None:
        improved = self.best_score is None or is_better(self.metric, value, self.best_score)
        ties = self.best_score is not None and value == self.best_score  # equal: prefer the later, longer-trained
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if improved:
            self.best_score, self.best_epoch = value, epoch
        if self.keep == "last" or improved or ties:
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            self.probs, self.saved_epoch, self.source = probs, epoch, source

    def patience_ran_out(self, patience: int) -> bool:
        return bool(patience) and self.bad_epochs >= patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "saved_epoch": self.saved_epoch, "source": self.source, "weights": self.weights,
                "probs": torch.from_numpy(np.asarray(self.probs))}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.bad_epochs, self.saved_epoch, self.source = state["bad_epochs"], state["saved_epoch"], state["source"]
        self.weights, self.probs = state["weights"], state["probs"].numpy()


def oof_selection(cfg: Config) -> dict[str, Any]:
    """How each fold's saved weights (and so its OOF rows) were chosen, and what choosing on the scored fold bought.

    keep: last saves the final epoch: the epoch is not chosen on the fold the OOF rows score (honest CV). keep: best
    chooses it there: `selection_gain` (mean over folds of the saved epoch's validation score minus the last epoch's,
    in the metric's direction) is how optimistic CV is at most from that choice. With EMA, raw vs EMA weights are
    also chosen on the fold each epoch (`weights`). Reads fold<k>/model.safetensors metadata and fold<k>/log.csv.
    """
    import json

    import pandas as pd
    from safetensors import safe_open

    from pipeline.core import bag, paths

    out, metric = paths.for_config(cfg), cfg.metric
    folds: list[dict[str, Any]] = []
    members = [(k, seed) for k in range(cfg.folds.n_folds) for seed in bag.members(cfg)]  # a seed bag: each member
    for k, seed in members:
        weights, log_csv = out.member(seed).weights(k), out.member(seed).train_log(k)
        if not weights.exists() or not log_csv.exists():
            continue
        with safe_open(str(weights), framework="pt") as f:
            facts = json.loads((f.metadata() or {}).get("recipe", "{}"))
        history = pd.read_csv(log_csv)
        columns = [c for c in (f"valid_{metric}", f"valid_{metric}_ema") if c in history]
        good = (history[columns] * goodness(metric, 1.0)).max(axis=1)  # the better of raw and EMA, larger = better
        saved = int(facts.get("epoch", len(history)))
        gain = float(good.iloc[saved - 1] - good.iloc[-1])
        member = {"fold": k, **({"seed": seed} if seed is not None else {})}
        folds.append({**member, "epoch": saved, "of": len(history), "weights": facts.get("weights", "raw"),
                      "gain": round(gain, 6), **({"swa": facts["swa"]} if "swa" in facts else {})})  # fmt: skip
    gains = [f["gain"] for f in folds]
    return {"keep": cfg.train.keep, "ema_chosen_on_fold": bool(cfg.train.ema),
            "swa_chosen_on_fold": bool(cfg.train.swa.epochs),
            "selection_gain": round(float(np.mean(gains)), 6) if gains else None, "folds": folds}  # fmt: skip
