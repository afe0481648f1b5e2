"""Batched, on-device training augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding, same size) and horizontal flip with p = 0.5.

    ``x`` is a normalised ``(N, C, H, W)`` batch. The padding value is 0 in *normalised*
    space, i.e. the dataset's mean colour, not black as torchvision's ``RandomCrop`` on raw
    images would give; we pad after normalising so the images can stay as one device tensor,
    and the difference only touches the ``padding``-pixel border.
    Random numbers come from torch's global RNG on ``x.device``. The output keeps a
    channels_last input's memory format.
    """
    # torchvision.transforms.v2 draws one crop for a whole batch tensor; we need one per sample.
    n, _, h, w = x.shape
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    flip = torch.rand(n, 1, device=x.device) < 0.5
    rows = dy + torch.arange(h, device=x.device)
    cols_ascending = torch.arange(w, device=x.device)
    # Flipping a crop is reading its window right to left, so crop and flip are one gather.
    cols = dx + torch.where(flip, cols_ascending.flip(0), cols_ascending)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    # The gather returns NCHW; a channels_last batch (speed.channels_last) stays channels_last,
    # or every training step's first convolution would convert it back (docs/gpu.md #15).
    if x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out
