"""The self-supervised embedding TypiClust and ProbCover choose in, and its cache (docs/methods.md §19).

One embedding per dataset and settings: trained once (``simclr.SimCLR``), cached on disk under a
fingerprint of its settings and of the training images (``cache.EmbeddingCache``), and reused by
every run and seed.
"""

from .cache import EmbeddingCache, data_digest, features_digest
from .simclr import SimCLR, nt_xent, random_views

__all__ = ["EmbeddingCache", "SimCLR", "data_digest", "features_digest", "nt_xent", "random_views"]
