"""A small CNN with ResNet-18's stage interface, for CPU work."""

from __future__ import annotations

from typing import Optional

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
    in_channels: int,
    num_classes: int,
    width: int = 16,
    dropout: float = 0.0,
    stages: int = 5,
    pool_grid: int = 2,
    image_size: Optional[int] = None,
) -> StagedClassifier:
    """Stem and stage 2 at full resolution (like ResNet's stem and layer1, so mixing layers
    k = 1, 2 see full-size maps), then ``stages - 2`` stride-2 stages, each doubling the width.

    The defaults (5 stages, a 2 x 2 pooling grid) are the learner of the CPU protocols. The
    original 4-stage CNN with a global average pool (``stages=4 pool_grid=1``) is weaker than a
    logistic regression on pixels on Fashion-MNIST: its last features see about 15 x 15 pixels
    and the global pool throws away where they are (docs/methods.md §1).

    With ``image_size`` given (the loop passes it), a stage never halves a map below 2 x 2: on
    8 x 8 digits the fifth stage keeps stride 1 (BatchNorm on a 1 x 1 map cannot train on a
    batch of one image). Fashion's 28 x 28 and CIFAR's 32 x 32 end at 4 x 4 either way.
    """
    if int(stages) != stages or not 3 <= stages <= 6:
        raise ConfigError(f"model.stages must be an integer from 3 to 6, got {stages!r}")
    layers = [_conv_bn_relu(in_channels, width), _conv_bn_relu(width, width)]
    cout, side = width, image_size
    for _ in range(int(stages) - 2):
        stride = 2 if side is None or side >= 4 else 1
        layers.append(_conv_bn_relu(cout, 2 * cout, stride=stride))
        cout *= 2
        if side is not None and stride == 2:
            side = (side + 1) // 2  # a 3x3 stride-2 convolution with padding 1
    return StagedClassifier(
        layers,
        embed_dim=cout * int(pool_grid) ** 2,
        num_classes=num_classes,
        dropout=dropout,
        pool_grid=pool_grid,
    )
