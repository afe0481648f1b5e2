"""BALD with MC dropout (Houlsby et al. 2011; Gal et al. 2017), docs/methods.md §3.

``I(x) = H[(1/T) sum_t p_t(x)] - (1/T) sum_t H[p_t(x)]`` in bits, each ``p_t`` from one
stochastic pass with the head's dropout on and BatchNorm in eval mode (never ``model.train()``,
which would also switch BatchNorm to batch statistics).

The dropout sits after the pooled feature, just before ``fc`` (§3), so everything before it is
deterministic in eval mode: the trunk runs once per batch and only dropout + ``fc`` run T times.
That is exact, not an approximation, and about T times cheaper than T full passes.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.staged import StagedClassifier
from .base import Acquisition, AcquisitionContext, PairScorer, pair_lambdas, top_k
from .passes import check_enough_candidates, eval_mode
from .uncertainty import entropy_bits

_LN2 = math.log(2.0)

NO_DROPOUT = (
    "acquisition=bald needs MC dropout, but the classifier has no head dropout (model.dropout=0); "
    "every row of a protocol trains the classifier with the protocol's dropout (0.5 in paper, quick and smoke), "
    "so drop the model.dropout=0 override"
)


def mutual_information_bits(probs: torch.Tensor) -> torch.Tensor:
    """BALD score of MC samples ``probs`` (T, B, C) -> (B,), in bits; 0 log 0 = 0.

    Zero when all T samples agree; positive when they disagree. Clamped at 0 against
    rounding (the exact value is >= 0 by Jensen's inequality).
    """
    t, b, c = probs.shape
    mean_entropy = entropy_bits(probs.reshape(t * b, c)).view(t, b).mean(0)
    return (entropy_bits(probs.mean(0)) - mean_entropy).clamp_min(0.0)


def mutual_information_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """As :func:`mutual_information_bits`, from MC logits (T, B, C), via log_softmax."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mean_entropy = -(p * logp).sum(-1).mean(0) / _LN2
    return (entropy_bits(p.mean(0)) - mean_entropy).clamp_min(0.0)


class BALD(Acquisition):
    """Top-``budget`` candidates by MC-dropout mutual information (``acquisition=bald``).

    ``samples`` is T (20, as BGADL, from which LADA's code derives; §3). ``model_dropout``
    is the classifier's configured head dropout, passed by conf/acquisition/bald.yaml so that
    a model without dropout fails when the run is built, not after the initial training.
    """

    per_instance = True
    metric_names = ("bald_mi_selected", "bald_mi_candidates")

    def __init__(self, samples: int = 20, model_dropout: Optional[float] = None) -> None:
        if int(samples) != samples or samples < 2:
            raise ConfigError(
                f"acquisition.samples must be an integer >= 2 (MC dropout passes), got {samples!r}"
            )
        if model_dropout is not None and not model_dropout > 0:
            raise ConfigError(NO_DROPOUT)
        self.samples = int(samples)
        self._metrics: dict[str, torch.Tensor] = {}

    # --- MC dropout ------------------------------------------------------------------------
    @staticmethod
    def dropout_rate(model: nn.Module) -> float:
        dropout = getattr(model, "dropout", None)
        if not isinstance(dropout, nn.Dropout) or not dropout.p > 0:
            raise ConfigError(NO_DROPOUT)
        return float(dropout.p)

    def mc_scores(self, model: StagedClassifier, pooled: torch.Tensor) -> torch.Tensor:
        """(B,) mutual information from pooled features (B, D): T dropout masks, one ``fc``.

        Only dropout is stochastic (``F.dropout`` with training=True, drawn from torch's RNG
        on the device); whatever produced ``pooled`` stays as it was.
        """
        p = self.dropout_rate(model)
        dropped = F.dropout(
            pooled.unsqueeze(0).expand(self.samples, *pooled.shape), p, training=True
        )
        return mutual_information_from_logits(model.fc(dropped))

    # --- selection ----------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, ctx: AcquisitionContext, candidates: torch.Tensor) -> torch.Tensor:
        model = ctx.model
        self.dropout_rate(model)
        with eval_mode(model):
            out = [
                self.mc_scores(model, model.embed(ctx.data.x_train[c]))
                for c in candidates.split(ctx.score_batch_size)
            ]
        return torch.cat(out)

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        check_enough_candidates("bald", candidates.numel(), budget)
        scores = self.scores(ctx, candidates)
        chosen = top_k(scores, budget, ctx.generator)
        self.query_scores = scores[chosen]
        self._metrics = {
            "bald_mi_selected": scores[chosen].mean(),
            "bald_mi_candidates": scores.mean(),
        }
        return candidates[chosen]

    def extra_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._metrics.items()}

    # --- look-ahead seams ---------------------------------------------------------------------
    def score_inputs(self, ctx: AcquisitionContext, x: torch.Tensor) -> torch.Tensor:
        return self.mc_scores(ctx.model, ctx.model.embed(x))

    def pair_scorer(self, ctx, first, second, k, h_first, h_second) -> PairScorer:
        self.dropout_rate(ctx.model)
        return _BaldPairScorer(self, ctx, k, h_first, h_second)


class _BaldPairScorer(PairScorer):
    """MI of classifier-feature mixes at stage ``k``; the mixed map is pooled once, then MC."""

    def __init__(self, acquisition: BALD, ctx: AcquisitionContext, k: int, h_first, h_second):
        self.acquisition, self.model, self.k = acquisition, ctx.model, k
        self.h_first, self.h_second = h_first, h_second
        self.batch = ctx.score_batch_size

    def _mi(self, h: torch.Tensor) -> torch.Tensor:
        return self.acquisition.mc_scores(self.model, self.model.embed_from(h, self.k))

    @torch.no_grad()
    def base(self) -> torch.Tensor:
        return torch.cat(
            [
                self._mi(a) + self._mi(b)
                for a, b in zip(self.h_first.split(self.batch), self.h_second.split(self.batch))
            ]
        )

    def mixed(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.mixed_features(lam, rows))

    def mixed_features(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(..., B, D) pooled vectors of the virtual instances: everything before MC dropout."""
        lam = pair_lambdas(lam, rows)
        a, b = self.h_first[rows], self.h_second[rows]  # (B, C, H, W)
        weight = lam.reshape(*lam.shape, *([1] * (a.dim() - 1))).to(a.dtype)  # (..., B, 1, 1, 1)
        h = torch.lerp(b, a, weight)  # lam * a + (1 - lam) * b (Eq. 12)
        pooled = self.model.embed_from(h.reshape(-1, *a.shape[1:]), self.k)
        return pooled.view(*lam.shape, pooled.shape[-1])

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        # fresh dropout masks on every call, as mixed draws them
        scores = self.acquisition.mc_scores(self.model, features.flatten(0, -2))
        return scores.view(features.shape[:-1])
