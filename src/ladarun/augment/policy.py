"""The mixing-policy network pi_phi of InfoMixup, the official code's "lambdanet" (docs/methods.md §9.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class LambdaNet(nn.Module):
    """[h^k(x); h^k(x')] (2C x H x W) -> tau (B, 1), one Beta concentration per pair (Eq. 10).

    LeNet-shaped: conv5x5 -> 6, pool, conv5x5 -> 16, pool, 120, 60, 1. With two 64-channel
    28x28 maps (ResNet-18 on Fashion-MNIST) it has 77,063 parameters, the paper's "77K";
    98,183 on 32x32 maps. The official activation is a sigmoid, so tau lies in (0, 1) and
    Beta(tau, tau) is U-shaped; ``tau_activation="softplus"`` gives the unbounded tau > 0
    the paper's text implies.
    Maps under 16 pixels (the 8x8 digits and synthetic sets) would vanish in the unpadded
    second conv; there it is padded instead (a [D] choice; the paper's datasets never hit it).
    """

    def __init__(self, in_channels: int, size: int, tau_activation: str = "sigmoid"):
        super().__init__()
        if tau_activation not in ("sigmoid", "softplus"):
            raise ConfigError(f"tau_activation must be sigmoid or softplus, got {tau_activation!r}")
        self.tau_activation = tau_activation
        pad2 = 0 if size >= 16 else 2
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=pad2)
        side = ((size // 2) + 2 * pad2 - 4) // 2
        if side < 1:
            raise ConfigError(f"feature maps of {size}x{size} are too small for the policy network")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 60)
        self.fc3 = nn.Linear(60, 1)

    def forward(self, pair_maps: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(pair_maps)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.tanh(self.fc1(torch.flatten(x, 1)))
        x = torch.tanh(self.fc2(x))
        x = self.fc3(x)
        return torch.sigmoid(x) if self.tau_activation == "sigmoid" else F.softplus(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
