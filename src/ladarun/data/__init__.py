"""Dataset sources: each turns a config into an :class:`ActiveDataset` of device tensors."""

from ladarun.data.base import ActiveDataset, BatchTransform
from ladarun.data.digits import DigitsSource
from ladarun.data.synthetic import SyntheticSource
from ladarun.data.transforms import random_crop_flip
from ladarun.data.vision import CIFAR10Source, FashionMNISTSource, SVHNSource

__all__ = [
    "ActiveDataset",
    "BatchTransform",
    "CIFAR10Source",
    "DigitsSource",
    "FashionMNISTSource",
    "SVHNSource",
    "SyntheticSource",
    "random_crop_flip",
]
