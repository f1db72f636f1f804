"""Datasets, samplers and DataLoaders: decode with PIL, augment with albumentations, batch as CHW tensors.

Training randomness is keyed, not streamed: the sampler's order depends only on (seed, epoch) and each
sample's augmentation only on (seed, epoch, index). So a run resumed mid-epoch, or with a different
number of workers, sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.data.augment import to_chw
from pipeline.data.cache import ImageCache
from pipeline.data.tables import load_image


class ImageDataset(Dataset):
    """Rows of (image path relative to `root`, target); targets may be None at test time.

    Keys past len(self) encode the epoch (key = epoch * n + index, see EpochSampler); with `seed` set, the
    augmentation of a key is seeded by it, so it is the same whichever worker or run draws it.
    """

    def __init__(
        self,
        root: Path,
        images: Sequence[str],
        targets: np.ndarray | None,
        transform: A.Compose,
        seed: int | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.root = Path(root)
        self.cache = cache
        self.images = list(images)
        self.targets = targets
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = key % len(self.images)
        if self.seed is not None:
            self.transform.set_random_seed((self.seed * 1_000_003 + key) % 2**32)
        path = self.images[index]
        pixels = self.cache[path] if self.cache is not None else load_image(self.root / path)
        image = self.transform(image=np.asarray(pixels))["image"]
        target = torch.as_tensor(self.targets[index]) if self.targets is not None else torch.tensor(-1)
        return torch.from_numpy(to_chw(image)), target


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch); `skip` resumes part-way through an epoch."""

    def __init__(self, n: int, seed: int, drop_last_batch_of: int = 0) -> None:
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0
        self.drop = drop_last_batch_of  # drop a trailing partial batch (BatchNorm breaks on a batch of 1)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        keys = (torch.randperm(self.n, generator=generator) + self.epoch * self.n).tolist()
        if self.drop and self.n > self.drop:
            keys = keys[: self.n - self.n % self.drop]
        return keys

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return len(self.order()) - self.skip


class BalancedEpochSampler(EpochSampler):
    """Rows drawn with replacement, probability inverse to their class frequency, keyed by (seed, epoch).

    Each draw's key encodes its position too, so a row drawn twice in an epoch gets two augmentations.
    """

    def __init__(self, targets: np.ndarray, seed: int, drop_last_batch_of: int = 0) -> None:
        super().__init__(len(targets), seed, drop_last_batch_of)
        counts = np.bincount(targets)
        self.weights = torch.tensor(1.0 / counts[targets], dtype=torch.float64)

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        picks = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        keys = (picks + self.n * (self.epoch * self.n + torch.arange(self.n))).tolist()
        if self.drop and self.n > self.drop:
            keys = keys[: self.n - self.n % self.drop]
        return keys


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
