"""Batched, on-device training augmentation."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError

log = logging.getLogger(__name__)


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding, same size) and horizontal flip with p = 0.5
    (``flip=False``: crops only).

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
    rows = dy + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        flipped = torch.rand(n, 1, device=x.device) < 0.5
        # Flipping a crop is reading its window right to left, so crop and flip are one gather.
        cols = torch.where(flipped, cols.flip(1), cols)
    cols = dx + cols
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
    # The gather returns NCHW; a channels_last batch (speed.channels_last) stays channels_last,
    # or every training step's first convolution would convert it back (docs/gpu.md #15).
    if x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def crop_flip(
    dataset: str, augment: bool, crop_padding: int, flip: bool
) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """A dataset's ``augment``, ``crop_padding`` and ``flip`` settings as its training transform
    (None: train on the images as they are). A dataset whose images mirror into other classes
    (digits) sets ``flip: false``, and ``augment=true`` says in one line that it crops only."""
    if isinstance(crop_padding, bool) or int(crop_padding) != crop_padding or crop_padding < 0:
        raise ConfigError(
            f"dataset.crop_padding must be an integer >= 0, got {crop_padding!r} (dataset {dataset})"
        )
    if not augment:
        return None
    if not flip:
        log.warning(
            "dataset %s: augment=true trains with random crops (padding %d) and no flips "
            "(dataset.flip=false: a mirror image is not of the same class here)",
            dataset,
            crop_padding,
        )
    return functools.partial(random_crop_flip, padding=int(crop_padding), flip=bool(flip))
