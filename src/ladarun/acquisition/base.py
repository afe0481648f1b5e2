"""Acquisition = score the candidates, then take the top ``budget`` (baal's score-then-rank).

Subclasses of :class:`ScoreAcquisition` only say how to score a probability vector
(``score_probs``). That function is also the seam LADA's look-ahead uses: it must be
differentiable in the probabilities, so the mixing policy can be trained to raise the score
of virtual instances (METHODS.md §9.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.base import ActiveDataset
from ..models.staged import StagedClassifier


@dataclass
class AcquisitionContext:
    """What an acquisition may look at in one iteration."""

    model: StagedClassifier
    data: ActiveDataset
    labeled: torch.Tensor  # indices into data.x_train, on the device
    generator: torch.Generator  # the run's seeded CPU generator for active-learning decisions
    score_batch_size: int = 100


def top_k(scores: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Positions of the ``k`` largest scores; ties are broken by a seeded random order.

    A random permutation followed by a stable sort makes tied candidates come out in a
    random but reproducible order, so a constant score gives a uniform random sample.
    """
    if k > scores.numel():
        raise ValueError(f"cannot select {k} of {scores.numel()} candidates")
    perm = torch.randperm(scores.numel(), generator=generator).to(scores.device)
    order = torch.sort(scores[perm], descending=True, stable=True).indices
    return perm[order[:k]]


class Acquisition:
    """Chooses ``budget`` points of ``candidates`` (dataset indices) to label."""

    #: True when :meth:`score_probs` exists, i.e. a look-ahead augmentation can use it.
    per_instance: bool = False

    def select(self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int) -> torch.Tensor:
        raise NotImplementedError

    def extra_metrics(self) -> dict[str, float]:
        """Per-iteration values to add to metrics.csv (see ``metric_names``)."""
        return {}

    metric_names: tuple[str, ...] = ()


class ScoreAcquisition(Acquisition):
    """An acquisition with a per-instance score of the predicted class probabilities."""

    per_instance = True

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, C) probabilities -> (B,) scores, larger = more informative. Differentiable."""
        raise NotImplementedError

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.score_probs(torch.softmax(logits, dim=1))

    @torch.no_grad()
    def scores(self, ctx: AcquisitionContext, candidates: torch.Tensor) -> torch.Tensor:
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            out = [
                self.score_logits(model(ctx.data.x_train[chunk]))
                for chunk in candidates.split(ctx.score_batch_size)
            ]
        finally:
            model.train(was_training)
        return torch.cat(out)

    def select(self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int) -> torch.Tensor:
        return candidates[top_k(self.scores(ctx, candidates), budget, ctx.generator)]
