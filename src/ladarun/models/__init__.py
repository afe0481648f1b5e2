"""Classifiers exposing ``features(x, k)``, ``forward_from(h, k)`` and ``embed(x)``."""

from .backbones import torchvision_backbone
from .cnn import cnn
from .resnet import resnet18
from .staged import StagedClassifier

__all__ = ["StagedClassifier", "cnn", "resnet18", "torchvision_backbone"]
