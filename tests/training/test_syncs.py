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
from pipeline.training import checkpoint, distributed, hot_path, loop

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
    run = loop.build_run(cfg, 0, torch.device("cpu"), training_fingerprint(cfg), distributed.SINGLE)
    steps = run.batches_per_epoch
    assert steps >= 9, "the epoch must be long enough to show per-step syncs"
    with SyncCounter() as syncs:
        run.f.train_loader = PausedLoader(run.f.train_loader, syncs)
        with checkpoint.StopFlag(None) as stop:
            loop.train_one_epoch(run, stop)
    assert run.state.step == steps
    callers = Counter(caller for _, caller in syncs.calls)
    unlisted = {caller: n for caller, n in callers.items() if caller.split(":")[0] not in ALLOWED}
    assert not unlisted, f"host reads in the per-step path over {steps} steps: {unlisted}"
    reads = sum(n for caller, n in callers.items() if caller.startswith("hot_path.py"))
    budget = math.ceil(steps / hot_path.SYNC_EVERY)
    assert reads <= budget, f"{reads} reads of the loss buffer over {steps} steps (budget {budget})"
    assert math.isfinite(run.state.partial["loss"]) and run.state.partial["loss"] > 0  # the losses were all read


def test_the_loss_buffer_names_the_first_non_finite_step_and_sums_the_finite_ones() -> None:
    losses = hot_path.StepLosses(torch.device("cpu"), size=8)
    for step, (value, n) in enumerate([(1.0, 2), (3.0, 4), (float("nan"), 4), (float("inf"), 4)], start=5):
        losses.record(torch.tensor(value), n, step)
    assert not losses.full
    total, bad = losses.read()
    assert total == 1.0 * 2 + 3.0 * 4 and bad is not None and bad[0] == 7 and math.isnan(bad[1])
    assert losses.read() == (0.0, None)  # read empties it
    for step in range(1, 9):
        losses.record(torch.tensor(0.5), 1, step)
    assert losses.full and losses.read() == (4.0, None)


def test_cached_ema_matches_timms_ema_step_for_step() -> None:
    from timm.utils import ModelEmaV3

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))  # fmt: skip
    model(torch.randn(2, 3, 6, 6))
    ours, timms = hot_path.CachedEma(model, decay=0.9, use_warmup=True), ModelEmaV3(model, decay=0.9, use_warmup=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        model(torch.randn(4, 3, 6, 6)).sum().backward()  # BatchNorm's running stats and counter move too
        optimizer.step()
        optimizer.zero_grad()
        ours.update(model, step=step)
        timms.update(model, step=step)
    expected = timms.module.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in ours.module.state_dict().items())
    assert not torch.equal(ours.module.state_dict()["0.weight"], model.state_dict()["0.weight"])


@pytest.mark.parametrize(
    ("keep", "early_stopping", "scored"),
    [("last", 0, [False, False, True]), ("best", 0, [True] * 3), ("last", 2, [True] * 3)],
)
def test_ema_is_scored_where_its_score_decides(keep: str, early_stopping: int, scored: list[bool]) -> None:
    from pipeline.core.config import TrainConfig

    cfg = TrainConfig(epochs=3, ema=True, keep=keep, early_stopping=early_stopping)
    assert [hot_path.ema_scored(epoch, cfg) for epoch in range(3)] == scored
