"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel.

`python -m pipeline train ...` under `torchrun --nproc_per_node=N` (Make: GPUS=N) trains one fold on N
processes: NCCL on CUDA (one GPU per process, LOCAL_RANK), gloo on CPU. The global batch stays
`train.batch_size`: every process takes its slice of each global batch (ShardedSampler), and DDP averages
gradients, so N processes step exactly like one process would on the same batch (BatchNorm statistics
aside, unless `train.sync_bn`). Only rank 0 writes artifacts. Checkpoints hold the unwrapped model, so a
run resumes under a different world size. Prediction shards rows without padding and gathers them, so
every row is predicted exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from pipeline.core.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()  # one process, no process group


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_world(device_name: str) -> tuple[World, torch.device | None]:
    """Join the process group torchrun set up; return the world and this process's device (None: not DDP)."""
    if not launched_by_torchrun():
        return World(), None
    rank, size, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"GPUS: process {local} has no GPU (torch sees {torch.cuda.device_count()}); lower GPUS")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return World(rank, size, local), torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")


def per_rank_batch(global_batch: int, world: World) -> int:
    if global_batch % world.size:
        raise UserError(f"train.batch_size={global_batch} must be divisible by the number of processes ({world.size})")
    return global_batch // world.size


class ShardedSampler(Sampler[int]):
    """This rank's slice of every global batch of `base` (an EpochSampler): global batch j is
    base_order[j*B:(j+1)*B] and rank r takes its [r*b:(r+1)*b], b = B / world size."""

    def __init__(self, base: Sampler[int], world: World, global_batch: int) -> None:
        self.base, self.world, self.global_batch = base, world, global_batch
        self.local = per_rank_batch(global_batch, world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:  # skip counts rows of the global order
        self.base.set_epoch(epoch, skip)

    def order(self) -> list[int]:
        return self.base.order()

    def _mine(self) -> list[int]:
        keys = self.base.order()[self.base.skip :]
        start = self.world.rank * self.local
        return [k for j in range(0, len(keys), self.global_batch) for k in keys[j + start : j + start + self.local]]

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


def shard_rows(n: int, world: World) -> np.ndarray:
    """Row indices this rank predicts: every world.size-th row, no padding, so rows are never duplicated."""
    return np.arange(world.rank, n, world.size)


def gather_rows(local: np.ndarray, n: int, world: World) -> np.ndarray | None:
    """Reassemble per-rank predictions (rows shard_rows(n)) into all n rows, in order, on rank 0."""
    if not world.active:
        return local
    parts: list = [None] * world.size
    dist.all_gather_object(parts, local)
    if not world.is_main:
        return None
    full = np.zeros((n, *local.shape[1:]), dtype=local.dtype)
    for rank, part in enumerate(parts):
        full[np.arange(rank, n, world.size)] = part
    return full


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def broadcast_flag(flag: bool, world: World) -> bool:
    """Rank 0's decision (e.g. stop now) for everyone, so all processes leave the loop together."""
    if not world.active:
        return flag
    value = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(value, src=0)
    return bool(value.item())


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def run_folds(args: argparse.Namespace, work: Callable[..., object], per_member: bool = False) -> None:
    """A per-fold stage's entry point: config from the CLI, the process group when under torchrun, each fold. With
    `per_member` (train), each member of a seed bag in turn, under its own lock: work(cfg, fold, device, world,
    seed=s), so members of one fold train in parallel processes (make -j)."""
    from pipeline.core import paths
    from pipeline.core.cli import config_from_args, folds_from_args, seeds_from_args
    from pipeline.core.locks import fold_lock
    from pipeline.training.model import resolve_device

    cfg = config_from_args(args)
    world, ddp_device = init_world(cfg.device)
    device = ddp_device or resolve_device(cfg.device)
    out = paths.for_config(cfg)
    try:
        for fold in folds_from_args(args, cfg):
            seeds = seeds_from_args(args, cfg) if per_member else [None]
            seeds = [None] if fold == paths.REFIT else seeds  # the refit: one model (pipeline.training.refit)
            for seed in seeds:
                # one process per fold or member (under torchrun: rank 0 holds it for all ranks)
                lock = fold_lock(out.member(seed).fold_lock(fold), fold, args.command) if world.is_main else None
                with lock or contextlib.nullcontext():
                    work(cfg, fold, device, world, **({"seed": seed} if seed is not None else {}))
    finally:
        shutdown(world)
