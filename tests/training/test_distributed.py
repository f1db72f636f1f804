"""DDP on CPU (gloo, 2 processes via torchrun) and fold-parallel Make runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers.builders import REPO, tiny_experiment
from helpers.chain import write_competition_yaml
from pipeline.data.loader import EpochSampler
from pipeline.training.distributed import ShardedSampler, World, shard_rows


def test_shards_split_every_global_batch_exactly() -> None:
    base = [EpochSampler(22, seed=3, drop_last_batch_of=8) for _ in range(2)]
    shards = [ShardedSampler(b, World(rank, 2), global_batch=8) for rank, b in enumerate(base)]
    for epoch, skip in ((0, 0), (1, 8)):
        for shard in shards:
            shard.set_epoch(epoch, skip)
        order = base[0].order()[skip:]
        mine = [list(s) for s in shards]
        for j in range(len(order) // 8):
            assert mine[0][4 * j : 4 * j + 4] + mine[1][4 * j : 4 * j + 4] == order[8 * j : 8 * j + 8]
    rows = [shard_rows(11, World(r, 3)) for r in range(3)]
    assert sorted(int(i) for part in rows for i in part) == list(range(11))  # every row once, no padding


def torchrun(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_ROOT": str(project), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pipeline",
        *args,
    ]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_ddp_matches_single_process_and_covers_every_row(project: Path) -> None:
    write_competition_yaml(project, "csv")
    # ConvNeXt normalises per sample (LayerNorm), so 2 x 4 rows step exactly like 1 x 8 rows
    settings = {"model": {"name": "test_convnext", "pretrained": False},
                "train": {"epochs": 1, "batch_size": 8, "deterministic": True}}  # fmt: skip
    single = tiny_experiment(project, name="single", **settings)
    ddp = tiny_experiment(project, name="ddp", **settings)
    env = {**os.environ, "PIPELINE_ROOT": str(project)}
    for stage, config in (("folds", single), ("train", single)):
        done = subprocess.run([sys.executable, "-m", "pipeline", stage, "--config", str(config), "--fold", "0"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
    result = torchrun(project, "train", "--config", str(ddp), "--fold", "0")
    assert result.returncode == 0, result.stderr
    a = load_file(str(project / "data/runs/toy/single/fold0/model.safetensors"))
    b = load_file(str(project / "data/runs/toy/ddp/fold0/model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-4, worst
    predicted = torchrun(project, "predict", "--config", str(ddp), "--fold", "0")
    assert predicted.returncode == 0, predicted.stderr
    oof = pd.read_csv(project / "data/runs/toy/ddp/fold0/oof.csv", dtype={"id": str})
    folds = pd.read_csv(project / "data/processed/toy/folds.csv", dtype={"id": str})
    assert list(oof["id"]) == list(folds.loc[folds["fold"] == 0, "id"])  # complete, unique, in order
    test = pd.read_csv(project / "data/runs/toy/ddp/fold0/test.csv", dtype={"id": str})
    assert len(test) == len(set(test["id"])) == 6


@pytest.mark.slow  # trains or drives make/the kernel: make test runs it, make test-fast does not
def test_fold_parallel_make_equals_serial(project: Path) -> None:
    write_competition_yaml(project, "csv")
    serial = tiny_experiment(project, name="serial", train={"deterministic": True})
    parallel = tiny_experiment(project, name="parallel", train={"deterministic": True})
    env = {**os.environ, "PIPELINE_ROOT": str(project)}
    for name in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):  # a make inside `make test`
        env.pop(name, None)
    for config, extra in ((serial, []), (parallel, ["-j2", "FOLD_GPUS=0,1"])):
        rel = str(config.relative_to(project))
        command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "train", f"CONFIG={rel}", *extra]
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "CUDA_VISIBLE_DEVICES=1" in done.stdout  # fold 1 got the second GPU
    for fold in (0, 1):
        a = load_file(str(project / f"data/runs/toy/serial/fold{fold}/model.safetensors"))
        b = load_file(str(project / f"data/runs/toy/parallel/fold{fold}/model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
