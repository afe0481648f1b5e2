"""Acquisition functions. A new one is a class here plus a YAML in conf/acquisition/."""

from .badge import BADGE
from .bald import BALD, mutual_information_bits
from .base import Acquisition, AcquisitionContext, ScoreAcquisition, top_k
from .coreset import Coreset, k_center_greedy
from .random import RandomAcquisition
from .uncertainty import MaxEntropy, VarRatio, entropy_bits
from .vaal import VAAL

__all__ = [
    "Acquisition",
    "AcquisitionContext",
    "BADGE",
    "BALD",
    "Coreset",
    "MaxEntropy",
    "RandomAcquisition",
    "ScoreAcquisition",
    "VAAL",
    "VarRatio",
    "entropy_bits",
    "k_center_greedy",
    "mutual_information_bits",
    "top_k",
]
