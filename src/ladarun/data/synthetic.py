"""A tiny deterministic dataset that a small CNN can learn in seconds, for tests."""

from __future__ import annotations

import os
from typing import Union

import torch

from ladarun.data.base import ActiveDataset
from ladarun.data.transforms import crop_flip
from ladarun.errors import ConfigError

# Per-pixel noise relative to the unit-variance prototypes: noisy enough that single pixels
# mislead, clean enough that whole images are easy to tell apart.
NOISE_STD = 1.0


class SyntheticSource:
    """Each class is a fixed random prototype image; samples add Gaussian noise.

    Classes are balanced (counts differ by at most one). The data depend only on the
    arguments: generation uses its own ``torch.Generator`` on the CPU, never the global RNG.
    """

    def __init__(
        self,
        name: str = "synthetic",
        n_train: int = 200,
        n_test: int = 100,
        num_classes: int = 4,
        channels: int = 1,
        image_size: int = 8,
        seed: int = 1234,
        augment: bool = False,
        crop_padding: int = 1,
        flip: bool = False,
    ) -> None:
        """``augment``: random crops of ``crop_padding`` pixels (and flips, with ``flip``)."""
        if num_classes < 2 or min(n_train, n_test) < num_classes or min(channels, image_size) < 1:
            raise ConfigError(
                f"dataset {name}: need num_classes >= 2, n_train and n_test >= num_classes, "
                f"channels and image_size >= 1 (got n_train={n_train}, n_test={n_test}, "
                f"num_classes={num_classes}, channels={channels}, image_size={image_size})"
            )
        self.name = name
        self.n_train, self.n_test = int(n_train), int(n_test)
        self.num_classes, self.channels, self.image_size = (
            int(num_classes),
            int(channels),
            int(image_size),
        )
        self.seed = int(seed)
        self.transform = crop_flip(name, augment, crop_padding, flip)

    def load(self, data_dir: Union[str, os.PathLike, None], device: torch.device) -> ActiveDataset:
        """Generate both splits and move them to ``device``; ``data_dir`` is ignored."""
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.channels, self.image_size, self.image_size)
        prototypes = torch.randn(self.num_classes, *shape, generator=g)

        def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=g)]
            return prototypes[labels] + NOISE_STD * torch.randn(n, *shape, generator=g), labels

        x_train, y_train = split(self.n_train)
        x_test, y_test = split(self.n_test)
        mean, std = x_train.mean(), x_train.std()
        return ActiveDataset(
            self.name,
            ((x_train - mean) / std).to(device),
            y_train.to(device),
            ((x_test - mean) / std).to(device),
            y_test.to(device),
            self.num_classes,
            self.transform,
        )
