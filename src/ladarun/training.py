"""Classifier training and evaluation on device-resident tensors."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .data.base import BatchTransform
from .protocol import Protocol


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    batch_size: int,
    transform: Optional[BatchTransform] = None,
) -> torch.Tensor:
    """One shuffled pass over ``x[indices]`` with cross-entropy; returns the summed loss.

    The sum stays on the device (no per-batch sync); the caller reads it once per epoch.
    """
    model.train()
    order = indices[torch.randperm(indices.numel(), device=indices.device)]
    total = torch.zeros((), device=x.device)
    for batch in order.split(batch_size):
        xb = x[batch]
        if transform is not None:
            xb = transform(xb)
        loss = F.cross_entropy(model(xb), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * batch.numel()
    return total


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy in percent over the whole of ``x``, in eval mode."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        correct += (model(xb).argmax(dim=1) == yb).sum()
    return 100.0 * correct.item() / y.numel()


def make_optimizer(model: torch.nn.Module, protocol: Protocol) -> torch.optim.Optimizer:
    """The classifier's optimizer: Adam at ``protocol.lr``, as the paper (the one place it is built)."""
    return torch.optim.Adam(model.parameters(), lr=protocol.lr)
