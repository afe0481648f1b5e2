"""scikit-learn's bundled 8x8 handwritten digits: a real dataset that needs no download."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ladarun.data.base import ActiveDataset
from ladarun.data.transforms import crop_flip
from ladarun.errors import ConfigError


class DigitsSource:
    """1,797 grey 1x8x8 digits, 10 classes, with a fixed stratified train/test split."""

    def __init__(
        self,
        name: str = "digits",
        test_fraction: float = 0.25,
        split_seed: int = 0,
        augment: bool = False,
        crop_padding: int = 1,
        flip: bool = False,
    ) -> None:
        """``augment``: random crops of ``crop_padding`` pixels while training (no flips: a
        mirrored digit is another digit, or none)."""
        if not 0.0 < float(test_fraction) < 1.0:
            raise ConfigError(
                f"dataset {name}: test_fraction must be in (0, 1), got {test_fraction}"
            )
        self.name = name
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.transform = crop_flip(name, augment, crop_padding, flip)

    def load(self, data_dir: Union[str, os.PathLike, None], device: torch.device) -> ActiveDataset:
        """Split, normalise with the training split's statistics, and move to ``device``.

        ``data_dir`` is ignored: scikit-learn ships the data.
        """
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
        x_train, x_test, y_train, y_test = train_test_split(
            images,
            digits.target,
            test_size=self.test_fraction,
            random_state=self.split_seed,
            stratify=digits.target,
        )
        # Test statistics must not leak into the normalisation.
        mean, std = float(x_train.mean()), float(x_train.std())

        def images_on(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy((x - mean) / std).to(device)

        def labels_on(y: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(y.astype(np.int64)).to(device)

        return ActiveDataset(
            self.name,
            images_on(x_train),
            labels_on(y_train),
            images_on(x_test),
            labels_on(y_test),
            10,
            self.transform,
        )
