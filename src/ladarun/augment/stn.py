"""The spatial transformer network of InfoSTN (docs/methods.md §10; Jaderberg et al. 2015).

The localisation net is the PyTorch STN tutorial's: conv7x7 -> 8, pool, ReLU, conv5x5 -> 10,
pool, ReLU, 32, 6. On 1x28x28 it has 5,520 parameters, the paper's "STN 5K"; 8,544 on 3x32x32.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def _pooled_side(size: int, kernel: int, pad: int) -> int:
    """Side after a stride-1 convolution with ``kernel``/``pad`` and a 2x2 max-pool."""
    return (size + 2 * pad - kernel + 1) // 2


class SpatialTransformer(nn.Module):
    """x -> grid_sample(x, affine_grid(theta(x))): one affine transform per image.

    ``bound`` keeps the transform near the identity (docs/methods.md §10, degeneracy pitfall):
    theta = [I | 0] + bound * tanh(raw). An unconstrained entropy-maximising STN collapses
    (it zooms into a blank region, which gives uniform predictions). The last layer starts at
    zero weights and bias, so raw = 0 and the transform is exactly the identity; with
    ``bound=None`` theta = raw and the bias starts at (1, 0, 0, 0, 1, 0) as in the tutorial.
    Sampling is bilinear with zero padding, i.e. the dataset's mean colour in normalised space.

    Images under 18 pixels (the 8x8 digits and synthetic sets) would vanish in the unpadded
    convolutions; there they are padded instead (a [D] choice; the paper's datasets never hit it).
    """

    identity: torch.Tensor  # buffer: [I | 0], (2, 3)

    def __init__(self, in_channels: int, image_size: int, bound: Optional[float] = 0.25):
        super().__init__()
        if bound is not None and not bound > 0:
            raise ConfigError(
                f"augment.bound must be > 0 (or null for an unbounded STN), got {bound}"
            )
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        self.bound = None if bound is None else float(bound)
        side = _pooled_side(_pooled_side(image_size, 7, 0), 5, 0)
        pad1, pad2 = (0, 0) if side >= 1 else (3, 2)
        side = _pooled_side(_pooled_side(image_size, 7, pad1), 5, pad2)
        if side < 1:
            raise ConfigError(
                f"images of {image_size}x{image_size} are too small for the STN's localisation net (it needs at "
                "least 4x4); use a dataset with larger images or another augment"
            )
        self.localisation = nn.Sequential(
            nn.Conv2d(in_channels, 8, kernel_size=7, padding=pad1),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(8, 10, kernel_size=5, padding=pad2),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(10 * side * side, 32),
            nn.ReLU(),
        )
        self.theta_head = nn.Linear(32, 6)
        nn.init.zeros_(self.theta_head.weight)
        if self.bound is None:
            with torch.no_grad():
                self.theta_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        else:
            nn.init.zeros_(self.theta_head.bias)
        self.register_buffer(
            "identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), persistent=False
        )

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3) affine matrices, float32 even under autocast."""
        raw = self.theta_head(self.localisation(x)).float().view(-1, 2, 3)
        return raw if self.bound is None else self.identity + self.bound * torch.tanh(raw)

    def transform(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x, self.theta(x))

    def distance_from_identity(self, theta: torch.Tensor) -> torch.Tensor:
        """(B,) Frobenius norm ||theta - [I | 0]||, 0 for the identity."""
        return (theta - self.identity).flatten(1).norm(dim=1)
