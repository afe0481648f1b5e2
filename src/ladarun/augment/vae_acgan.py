"""BGADL's VAE-ACGAN networks: encoder E, generator G, discriminator D (docs/methods.md §11).

Images are in [0, 1] (G ends in a sigmoid). G and D follow the infoGAN layout of the BGADL
reference code at a ``width`` multiplier: width 1.0 is the reference (FC 1024, 128/64
channels), the default 0.5 halves every hidden size. E is the reference's conv trunk with a
proper 128 x s x s flatten (the reference squeezes it through a 1-unit bottleneck, which
looks like a bug), then 256 -> (mu, log sigma^2) without a sigmoid.

On 1x28x28 with 10 classes and 64-d latents: E 460,736 + G 6,652,481 + D 6,559,169 =
13,672,386 parameters at width 1.0 (the reference, 100-d latents and the bottleneck: 13.59M,
the paper's "13M"); 3,789,762 at width 0.5.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def check_image_size(image_size: int) -> None:
    if image_size < 8 or image_size % 4:
        raise ConfigError(
            f"BGADL's generator builds images from a (side / 4)-sized map with two stride-2 upsamplings, so it needs "
            f"a side divisible by 4 and at least 8; this dataset's images are {image_size}x{image_size}. Use another "
            "augment with it, or pad its images"
        )


def _width(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class Encoder(nn.Module):
    """x -> (mu, log sigma^2), each (B, latent_dim)."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = ((image_size // 2) // 2) // 2  # 28 -> 14 -> 7 -> 3; 32 -> 4; 8 -> 1
        self.hidden = nn.Sequential(nn.Linear(128 * side * side, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(self.trunk(x))
        return self.mu(h), self.logvar(h)


class Generator(nn.Module):
    """[z; onehot(y)] -> image in [0, 1]: FC, FC to a (side/4)^2 map, two stride-2 deconvolutions."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        latent_dim: int = 64,
        width: float = 0.5,
    ):
        super().__init__()
        self.num_classes = num_classes
        fc, c1, c2 = _width(1024, width), _width(128, width), _width(64, width)
        self.c1, self.side = c1, image_size // 4
        self.fc = nn.Sequential(
            nn.Linear(latent_dim + num_classes, fc),
            nn.BatchNorm1d(fc),
            nn.ReLU(),
            nn.Linear(fc, c1 * self.side * self.side),
            nn.BatchNorm1d(c1 * self.side * self.side),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, in_channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(y, self.num_classes).to(z.dtype)
        h = self.fc(torch.cat([z, onehot], dim=1)).view(-1, self.c1, self.side, self.side)
        return self.deconv(h)


class Discriminator(nn.Module):
    """image in [0, 1] -> real/fake logit (B,). The sigmoid is in the loss (BCE with logits)."""

    def __init__(self, in_channels: int, image_size: int, width: float = 0.5):
        super().__init__()
        c1, c2, fc = _width(64, width), _width(128, width), _width(1024, width)
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.BatchNorm2d(c2),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(c2 * side * side, fc),
            nn.BatchNorm1d(fc),
            nn.LeakyReLU(0.2),
            nn.Linear(fc, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
