"""Augmentations. A new one is a class here plus a YAML in conf/augment/."""

from .adamixup import AdaMixup
from .base import Augment, NoAugment
from .bgadl import BGADL
from .infomixup import FixedInfoMixup, InfoMixup
from .infostn import FixedInfoSTN, InfoSTN
from .manifold_mixup import ManifoldMixup

__all__ = [
    "AdaMixup",
    "Augment",
    "BGADL",
    "FixedInfoMixup",
    "FixedInfoSTN",
    "InfoMixup",
    "InfoSTN",
    "ManifoldMixup",
    "NoAugment",
]
