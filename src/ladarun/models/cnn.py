"""A small CNN with ResNet-18's stage interface, for CPU work."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .staged import StagedClassifier


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def cnn(
    in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.0, stages: int = 5, pool_grid: int = 2
) -> StagedClassifier:
    """Stem and stage 2 at full resolution (like ResNet's stem and layer1, so mixing layers
    k = 1, 2 see full-size maps), then ``stages - 2`` stride-2 stages, each doubling the width.

    The defaults (5 stages, a 2 x 2 pooling grid) are the learner of the CPU protocols. The
    original 4-stage CNN with a global average pool (``stages=4 pool_grid=1``) is weaker than a
    logistic regression on pixels on Fashion-MNIST: its last features see about 15 x 15 pixels
    and the global pool throws away where they are (README, "The CPU learner").
    """
    if int(stages) != stages or not 3 <= stages <= 6:
        raise ConfigError(f"model.stages must be an integer from 3 to 6, got {stages!r}")
    layers = [_conv_bn_relu(in_channels, width), _conv_bn_relu(width, width)]
    cout = width
    for _ in range(int(stages) - 2):
        layers.append(_conv_bn_relu(cout, 2 * cout, stride=2))
        cout *= 2
    return StagedClassifier(
        layers, embed_dim=cout * int(pool_grid) ** 2, num_classes=num_classes, dropout=dropout, pool_grid=pool_grid
    )
