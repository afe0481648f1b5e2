"""Acquisition functions. A new one is a class here plus a YAML in conf/acquisition/."""

from .alfamix import ALFAMix
from .badge import BADGE
from .bald import BALD, mutual_information_bits
from .base import Acquisition, AcquisitionContext, ScoreAcquisition, top_k
from .coreset import Coreset, k_center_greedy
from .probcover import ProbCover
from .random import RandomAcquisition
from .typiclust import TypiClust
from .uncertainty import Margin, MaxEntropy, VarRatio, entropy_bits
from .vaal import VAAL

__all__ = [
    "ALFAMix",
    "Acquisition",
    "AcquisitionContext",
    "BADGE",
    "BALD",
    "Coreset",
    "Margin",
    "MaxEntropy",
    "ProbCover",
    "RandomAcquisition",
    "ScoreAcquisition",
    "TypiClust",
    "VAAL",
    "VarRatio",
    "entropy_bits",
    "k_center_greedy",
    "mutual_information_bits",
    "top_k",
]
