"""Dataset sources: each turns a config into an :class:`ActiveDataset` of device tensors."""

from ladarun.data.base import ActiveDataset, BatchTransform
from ladarun.data.digits import DigitsSource
from ladarun.data.folder import ImageFolderSource
from ladarun.data.synthetic import SyntheticSource
from ladarun.data.transforms import crop_flip, random_crop_flip
from ladarun.data.vision import (
    CIFAR10Source,
    CIFAR100Source,
    FashionMNISTSource,
    KMNISTSource,
    MNISTSource,
    SVHNSource,
)

__all__ = [
    "ActiveDataset",
    "BatchTransform",
    "CIFAR10Source",
    "CIFAR100Source",
    "DigitsSource",
    "FashionMNISTSource",
    "ImageFolderSource",
    "KMNISTSource",
    "MNISTSource",
    "SVHNSource",
    "SyntheticSource",
    "crop_flip",
    "random_crop_flip",
]
