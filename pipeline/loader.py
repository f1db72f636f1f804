"""Datasets and DataLoaders: decode with PIL, augment with albumentations, batch as CHW float tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.augment import to_chw
from pipeline.data import load_image


class ImageDataset(Dataset):
    """Rows of (image path relative to `root`, target); targets may be None at test time."""

    def __init__(self, root: Path, images: Sequence[str], targets: np.ndarray | None, transform: A.Compose) -> None:
        self.root = Path(root)
        self.images = list(images)
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(image=load_image(self.root / self.images[index]))["image"]
        target = torch.as_tensor(self.targets[index]) if self.targets is not None else torch.tensor(-1)
        return torch.from_numpy(to_chw(image)), target


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, device: torch.device, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) > batch_size,  # a 1-row batch breaks BatchNorm in training
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=generator,
    )
