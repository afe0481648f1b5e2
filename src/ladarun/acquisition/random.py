"""Random acquisition: a uniform sample of the candidates, with no model pass."""

from __future__ import annotations

import torch

from .base import Acquisition, AcquisitionContext, top_k


class RandomAcquisition(Acquisition):
    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        # All scores tie, so the shared top-k returns a seeded uniform sample.
        return candidates[
            top_k(torch.zeros(candidates.numel(), device=candidates.device), budget, ctx.generator)
        ]
