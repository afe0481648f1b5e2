"""A small CNN with ResNet-18's stage layout, for CPU work."""
from __future__ import annotations

from torch import nn

from .staged import StagedClassifier


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def cnn(in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.0) -> StagedClassifier:
    """Stem and stage 2 at full resolution (like ResNet's stem and layer1, so mixing layers
    k = 1, 2 see full-size maps), then two stride-2 stages doubling the width.
    About 200x cheaper than ResNet-18 on 28x28 images at the default width 16.
    """
    stages = [
        _conv_bn_relu(in_channels, width),
        _conv_bn_relu(width, width),
        _conv_bn_relu(width, 2 * width, stride=2),
        _conv_bn_relu(2 * width, 4 * width, stride=2),
    ]
    return StagedClassifier(stages, embed_dim=4 * width, num_classes=num_classes, dropout=dropout)
