"""Augmentations hook into Algorithm 1 at two places.

1. ``acquire``: how the query is chosen. The default defers to the acquisition; a
   look-ahead augmentation (LADA's InfoMixup, InfoSTN) overrides it to score virtual
   instances with the acquisition's per-instance score.
2. ``extra_step``: called once per training epoch after the pass over the labeled set,
   to take a step on virtual instances (Eq. 17-19). The default does nothing.

``begin_iteration`` tells the augmentation which points were just acquired, and
``metrics`` returns values for the per-iteration CSV (columns named in ``metric_names``).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..acquisition.base import Acquisition, AcquisitionContext


class Augment:
    metric_names: tuple[str, ...] = ()
    #: True when ``acquire`` needs the acquisition's per-instance score (look-ahead methods).
    needs_per_instance_score: bool = False

    def check_compatible(self, acquisition: Acquisition, acquisition_name: str) -> None:
        """Raise ConfigError when this augmentation cannot work with ``acquisition``."""

    def acquire(
        self, acquisition: Acquisition, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        return acquisition.select(ctx, candidates, budget)

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        """Called after acquisition with the dataset indices just labeled."""

    def extra_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Optional[float]:
        """One extra optimisation step per epoch; returns its summed loss, or None."""
        return None

    def metrics(self) -> dict[str, float]:
        return {}


class NoAugment(Augment):
    """Plain Algorithm 1: the acquisition alone, no virtual instances."""
