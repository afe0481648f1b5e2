"""Acquisitions that choose in a self-supervised embedding of the training set (TypiClust, ProbCover).

The embedding is the dataset's, not the classifier's: trained once per dataset with the
settings of the acquisition's ``embedding`` node (``conf/embedding/``), cached in the folder the
runner hands over from the config key ``embedding_cache`` (``use_cache``), and the same for every
run and seed (docs/methods.md §19). A run remembers a digest of the embedding it chose with, so a
resumed run that would find another one (the cache deleted and rebuilt differently) stops
instead of silently continuing with other features.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..embedding import EmbeddingCache, SimCLR, features_digest
from ..errors import ConfigError
from .base import Acquisition, AcquisitionContext


def seed_from(generator: torch.Generator) -> int:
    """A seed for a library that takes one (scikit-learn), drawn from the run's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class EmbeddingAcquisition(Acquisition):
    """An acquisition over the (N, D) L2-normalised self-supervised features of ``x_train``."""

    name = "embedding"

    def __init__(
        self, embedding: Union[SimCLR, Mapping[str, Any]], whole_pool: bool = False
    ) -> None:
        self.spec = embedding if isinstance(embedding, SimCLR) else SimCLR(**dict(embedding))
        self.whole_pool = bool(whole_pool)
        self.cache: Optional[EmbeddingCache] = None
        self._features: Optional[torch.Tensor] = None
        self.cache_file: Optional[Path] = None  # the embedding's file, once read
        self._digest: Optional[str] = None  # of the embedding this run has chosen with
        self._metrics: dict[str, float] = {}

    def use_cache(self, folder: Union[str, os.PathLike[str]]) -> None:
        self.cache = EmbeddingCache(folder)
        self.cache.check_writable()

    def features(self, ctx: AcquisitionContext) -> torch.Tensor:
        """The dataset's embedding (on the CPU), from the cache or built into it on first use."""
        if self._features is None:
            if self.cache is None:
                raise ConfigError(
                    f"acquisition={self.name} needs a folder for its embedding; set embedding_cache=<folder>"
                )
            record = self.cache.record(self.spec, ctx.data.name, ctx.data.x_train)
            features = record["features"].float()
            digest = features_digest(features)
            if self._digest is not None and digest != self._digest:
                raise ConfigError(
                    f"the embedding in {self.cache.folder} is not the one this run started with "
                    "(rebuilt since?); restore that cache file or delete the run to start it again"
                )
            self._features, self._digest, self.cache_file = features, digest, record["path"]
        return self._features

    def candidates_for(self, ctx: AcquisitionContext, candidates: torch.Tensor) -> torch.Tensor:
        """The points to choose from, on the CPU: the candidate subset or, with ``whole_pool``, the pool."""
        return (ctx.pool if self.whole_pool else candidates).cpu()

    def extra_metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"embedding_digest": self._digest}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._digest = state.get("embedding_digest")
