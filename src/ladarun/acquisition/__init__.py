"""Acquisition functions. A new one is a class here plus a YAML in conf/acquisition/."""
from .base import Acquisition, AcquisitionContext, ScoreAcquisition, top_k
from .random import RandomAcquisition
from .uncertainty import MaxEntropy, VarRatio, entropy_bits

__all__ = [
    "Acquisition",
    "AcquisitionContext",
    "MaxEntropy",
    "RandomAcquisition",
    "ScoreAcquisition",
    "VarRatio",
    "entropy_bits",
    "top_k",
]
