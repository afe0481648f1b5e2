"""CIFAR-style ResNet-18 built from torchvision's (docs/methods.md §2)."""

from __future__ import annotations

from typing import Optional

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from .staged import StagedClassifier


def resnet18(
    in_channels: int, num_classes: int, dropout: float = 0.0, image_size: Optional[int] = None
) -> StagedClassifier:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool.

    ``image_size`` is accepted for the model-factory interface and not used.
    That is the kuangliu CIFAR ResNet-18 the official LADA code writes by hand (11,173,962
    parameters for 3 input channels and 10 classes). Stages: stem, layer1..layer4.
    """
    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu)  # net.maxpool is dropped
    model = StagedClassifier(
        [stem, net.layer1, net.layer2, net.layer3, net.layer4],
        embed_dim=512,
        num_classes=num_classes,
        dropout=dropout,
    )
    model.fc = net.fc  # keep torchvision's initialisation of the classifier layer
    return model
