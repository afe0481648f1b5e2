"""Acquisition = score the candidates, then take the top ``budget`` (baal's score-then-rank).

Subclasses of :class:`ScoreAcquisition` only say how to score a probability vector
(``score_probs``). A look-ahead augmentation (LADA's InfoMixup and InfoSTN) asks the
acquisition for one more thing, through two seams:

- :meth:`Acquisition.score_inputs`: the per-instance score ``alpha(x)`` of a batch of
  (possibly virtual) images, differentiable in the images;
- :meth:`Acquisition.pair_scorer`: for candidate pairs ``(x_i, x'_i)`` mixed at stage ``k``,
  the two single-point scores and ``alpha_mix(lambda)`` of the virtual instance, differentiable
  in ``lambda`` so the mixing policy can be trained to raise it (docs/methods.md §9.1, Eq. 13-15).

Classifier-probability scores (ent, var) get both from :class:`ScoreAcquisition`; an
acquisition with a score of its own (VAAL's discriminator) overrides them. Batch-mode
acquisitions (Coreset, BADGE) have neither and say so with ``per_instance = False``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

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

    @property
    def pool(self) -> torch.Tensor:
        """Indices of every unlabeled training point (on the device)."""
        mask = torch.ones(self.data.y_train.numel(), dtype=torch.bool, device=self.labeled.device)
        mask[self.labeled] = False
        return torch.nonzero(mask).flatten()


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


class PairScorer:
    """Scores of candidate pairs for a look-ahead mixup; pairs are rows ``0..P-1``."""

    def base(self) -> torch.Tensor:
        """(P,) ``alpha(x_i) + alpha(x'_i)``: the first two terms of Eq. 15."""
        raise NotImplementedError

    def mixed(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(S, B) ``alpha_mix`` of the virtual instances of pairs ``rows`` (B,) mixed with ``lam`` (S, B).

        ``lam[s, j]`` is the s-th of S lambda samples for pair ``rows[j]``, and the virtual
        instance is ``lam x_i + (1 - lam) x'_i`` in the scorer's space. Differentiable in
        ``lam``. Score all S x B instances in one batched pass.
        """
        raise NotImplementedError

    def mixed_features(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(S, B, F): what ``mixed`` scores, before its last nonlinear step (``score_features``).

        The tabulated look-ahead estimator (augment/tabulated.py) tabulates these on a lambda
        grid and interpolates them linearly. A scorer gains accuracy there by returning values
        that are (nearly) linear in lambda: the logits of a ReLU network with eval-mode
        BatchNorm are piecewise linear in lambda, their entropy is not. By default the score
        itself (F = 1).
        """
        return self.mixed(lam, rows).unsqueeze(-1)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) features of ``mixed_features`` -> (...) scores; differentiable."""
        return features.squeeze(-1)


class Acquisition:
    """Chooses ``budget`` points of ``candidates`` (dataset indices) to label."""

    #: True when the acquisition has a per-instance score, i.e. ``score_inputs`` and
    #: ``pair_scorer`` work and a look-ahead augmentation can use it.
    per_instance: bool = False
    #: Per-iteration values this acquisition adds to metrics.csv (see ``extra_metrics``).
    metric_names: tuple[str, ...] = ()
    #: False when ``pair_scorer`` ignores the classifier's maps ``h_first``/``h_second`` (VAAL
    #: mixes its own latent means), so a look-ahead without a policy need not compute them.
    pair_scorer_reads_maps: bool = True
    #: Scores of the points the last ``select`` returned, in its order, for queries.csv; None
    #: when the acquisition ranks by no per-point score (Random, Coreset, BADGE). The loop
    #: clears it before every choice.
    query_scores: Optional[torch.Tensor] = None

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def use_cache(self, folder: Union[str, os.PathLike[str]]) -> None:
        """Where to keep what is the same for every run of a dataset (the config key
        ``embedding_cache``: TypiClust's and ProbCover's embedding). The runner calls it once,
        before any data is loaded; most acquisitions keep nothing there."""

    def prepare(self, ctx: AcquisitionContext) -> None:
        """Called once per iteration before any scoring: train auxiliary networks here (VAAL).

        ``select`` of an acquisition that needs it calls it; a look-ahead augmentation calls
        it before using ``score_inputs`` or ``pair_scorer``. Calling it twice in one
        iteration must be avoided by the caller.
        """

    def score_inputs(self, ctx: AcquisitionContext, x: torch.Tensor) -> torch.Tensor:
        """(B,) scores of normalised images ``x``, differentiable in ``x``; the model is in eval mode."""
        raise NotImplementedError(f"{type(self).__name__} has no per-instance score")

    def pair_scorer(
        self,
        ctx: AcquisitionContext,
        first: torch.Tensor,
        second: torch.Tensor,
        k: int,
        h_first: torch.Tensor,
        h_second: torch.Tensor,
    ) -> PairScorer:
        """Scorer of the pairs ``(first[i], second[i])`` (dataset indices) mixed at stage ``k``.

        ``h_first``/``h_second`` are the classifier's cached ``h^k`` of both members (eval
        mode, no grad), which the augmentation computed anyway for its policy network. An
        acquisition whose scorer never reads them says so with ``pair_scorer_reads_maps = False``;
        an augmentation without a policy network (LADA^fixed) then passes (P, 0) placeholders.
        """
        raise NotImplementedError(f"{type(self).__name__} has no per-instance score")

    def extra_metrics(self) -> dict[str, float]:
        """Per-iteration values to add to metrics.csv (columns named in ``metric_names``)."""
        return {}

    def aux_parameters(self) -> int:
        """Parameters of auxiliary networks (Table 1's Param column); 0 when there are none."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """Everything that persists across iterations (networks, optimisers), for resume."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class _ClassifierPairScorer(PairScorer):
    """Pairs scored by a function of the classifier's logits, mixing at stage ``k`` (Eq. 12-15)."""

    def __init__(
        self, acquisition: "ScoreAcquisition", ctx: AcquisitionContext, k: int, h_first, h_second
    ):
        self.acquisition, self.model, self.k = acquisition, ctx.model, k
        self.h_first, self.h_second = h_first, h_second
        self.batch = ctx.score_batch_size

    @torch.no_grad()
    def base(self) -> torch.Tensor:
        # forward_from(h^k(x), k) == forward(x), so the cached maps give alpha(x) directly.
        score = lambda h: self.acquisition.score_logits(self.model.forward_from(h, self.k))
        return torch.cat(
            [
                score(a) + score(b)
                for a, b in zip(self.h_first.split(self.batch), self.h_second.split(self.batch))
            ]
        )

    def mixed(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.mixed_features(lam, rows))

    def mixed_features(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(S, B, C) logits of the virtual instances."""
        a, b = self.h_first[rows].unsqueeze(0), self.h_second[rows].unsqueeze(0)  # (1, B, C, H, W)
        weight = lam.reshape(*lam.shape, *([1] * (a.dim() - 2))).to(a.dtype)  # (S, B, 1, 1, 1)
        # lam * a + (1 - lam) * b (Eq. 12), broadcast over the S samples
        h = torch.lerp(b, a, weight)
        logits = self.model.forward_from(h.flatten(0, 1), self.k)
        return logits.view(*lam.shape, logits.shape[-1])

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.acquisition.score_logits(features.flatten(0, -2)).view(features.shape[:-1])


class ScoreAcquisition(Acquisition):
    """An acquisition with a per-instance score of the predicted class probabilities."""

    per_instance = True

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, C) probabilities -> (B,) scores, larger = more informative. Differentiable."""
        raise NotImplementedError

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.score_probs(torch.softmax(logits, dim=1))

    def score_inputs(self, ctx: AcquisitionContext, x: torch.Tensor) -> torch.Tensor:
        return self.score_logits(ctx.model(x))

    def pair_scorer(self, ctx, first, second, k, h_first, h_second) -> PairScorer:
        return _ClassifierPairScorer(self, ctx, k, h_first, h_second)

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

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        scores = self.scores(ctx, candidates)
        rows = top_k(scores, budget, ctx.generator)
        self.query_scores = scores[rows]
        return candidates[rows]


def pair_lambdas(lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``lam`` of :meth:`PairScorer.mixed` with its last dimension indexing ``rows``.

    (S, B) (S lambda samples of each of B rows) and (B,) pass through unchanged; a (B, 1)
    column, one lambda per row, becomes (B,). A scorer then returns scores of ``lam``'s shape.
    """
    if lam.shape[-1] != rows.numel():
        if lam.numel() != rows.numel():
            raise ValueError(
                f"lam of shape {tuple(lam.shape)} does not match {rows.numel()} pair rows"
            )
        lam = lam.reshape(rows.shape)
    return lam
