"""Issue 27: the per-step training path reads nothing back from the device beyond a listed budget.

On a GPU every `.item()`, `.cpu()`, `.tolist()`, `float(t)` or `bool(t)` waits for all queued kernels, and a
step that waits cannot be queued behind the one before it. On the CPU those reads cost nothing, so no timing
here would show them: these tests count them (tests/helpers/syncs.py) over real training steps.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers.builders import run_main, tiny_experiment, write_competition_config
from helpers.syncs import SyncCounter
from pipeline.core.config import load_config, training_fingerprint
from pipeline.training import checkpoint, distributed, hot_path, train

# The only host reads the loop may make, by the file that makes them; anything else found in the per-step path
# fails the test with its file:line.
ALLOWED = {
    "hot_path.py": "the loss buffer (StepLosses.read): once per SYNC_EVERY steps and at the epoch's end",
}


class PausedLoader:
    """The fold's training loader with counting paused while it draws its order (host tensors of a CPU
    torch.Generator) and produces batches (in a real run, worker processes decode and collate on the host)."""

    def __init__(self, loader: torch.utils.data.DataLoader, syncs: SyncCounter) -> None:
        self.loader, self.syncs = loader, syncs
        self.sampler = [None] * sum(1 for _ in syncs.paused(loader.sampler))  # len(sampler) = one order() draw

    def __iter__(self) -> Any:
        return self.syncs.paused(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


CASES = {
    "init's recipe (EMA)": {"ema": True},
    "mixup, cutmix, clipping, accumulation, balanced sampler": {
        "ema": True, "mixup": 0.2, "cutmix": 1.0, "clip_grad": 1.0, "accumulate": 2, "sampler": "balanced",
        "label_smoothing": 0.1,
    },
}  # fmt: skip


@pytest.mark.parametrize("recipe", CASES.values(), ids=CASES.keys())
def test_training_steps_read_the_device_only_within_budget(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, recipe: dict[str, Any]
) -> None:
    monkeypatch.setattr(hot_path, "SYNC_EVERY", 4)  # a short epoch still crosses a read
    monkeypatch.setenv("PIPELINE_PROGRESS", "plain")  # the progress lines run too
    write_competition_config(project, n_train=48, n_folds=2)
    config = tiny_experiment(project, train={"batch_size": 2, "epochs": 2, **recipe})
    assert run_main(capsys, "folds", "--config", str(config)).returncode == 0
    cfg = load_config(config)
    run = train.build_run(cfg, 0, torch.device("cpu"), training_fingerprint(cfg), distributed.SINGLE)
    steps = run.batches_per_epoch
    assert steps >= 9, "the epoch must be long enough to show per-step syncs"
    with SyncCounter() as syncs:
        run.f.train_loader = PausedLoader(run.f.train_loader, syncs)
        with checkpoint.StopFlag(None) as stop:
            train.train_one_epoch(run, stop)
    assert run.state.step == steps
    callers = Counter(caller for _, caller in syncs.calls)
    unlisted = {caller: n for caller, n in callers.items() if caller.split(":")[0] not in ALLOWED}
    assert not unlisted, f"host reads in the per-step path over {steps} steps: {unlisted}"
    reads = sum(n for caller, n in callers.items() if caller.startswith("hot_path.py"))
    budget = math.ceil(steps / hot_path.SYNC_EVERY)
    assert reads <= budget, f"{reads} reads of the loss buffer over {steps} steps (budget {budget})"
    assert math.isfinite(run.state.partial["loss"]) and run.state.partial["loss"] > 0  # the losses were all read
