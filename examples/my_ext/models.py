from torch import nn

from ladarun.models import StagedClassifier


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def small_vgg(
    in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.0, image_size=None
):
    stages = [
        _block(in_channels, width),  # k = 1: the stem, full resolution
        _block(width, width),  # k = 2: full resolution, LADA's second mixing layer
        _block(width, 2 * width, stride=2),  # k = 3
        _block(2 * width, 4 * width, stride=2),  # k = 4
    ]
    return StagedClassifier(stages, embed_dim=4 * width, num_classes=num_classes, dropout=dropout)
