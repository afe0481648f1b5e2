"""Augmentations. A new one is a class here plus a YAML in conf/augment/."""
from .base import Augment, NoAugment

__all__ = ["Augment", "NoAugment"]
