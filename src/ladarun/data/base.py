"""The in-memory form every dataset takes: whole splits as tensors on the device."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ActiveDataset:
    """A dataset held as four device tensors.

    Images are float32 ``(N, C, H, W)`` and already normalised; labels are int64 ``(N,)``.
    The active-learning loop refers to training points by index only: the labeled set and
    the pool are index tensors into ``x_train``, never copies of it.
    ``train_transform`` is the batched, on-device training augmentation (CIFAR-10's random
    crop and flip), or ``None``; it draws from torch's global RNG.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    train_transform: Optional[BatchTransform] = None

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def fingerprint(self) -> str:
        """A hash of the four tensors (shapes, dtypes and every byte): the same images and labels
        in the same order give the same fingerprint. A run's saved indices name the same points
        only on data with its fingerprint (a resume checks it)."""
        digest = hashlib.sha256()
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            flat = tensor.detach().cpu().contiguous()
            digest.update(f"{tuple(flat.shape)} {flat.dtype};".encode())
            digest.update(flat.view(torch.uint8).numpy().data)
        return digest.hexdigest()[:16]

    def to(self, device: torch.device) -> "ActiveDataset":
        return ActiveDataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
            self.train_transform,
        )
