"""Single-point uncertainty scores of the predictive distribution (docs/methods.md §3)."""

from __future__ import annotations

import math

import torch

from .base import ScoreAcquisition


def entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """H[p] = -sum_c p_c log2 p_c with 0 log 0 = 0, so a zero probability stays finite.

    (The official code adds 1e-100 before the log, which is 0 in float32 and gives NaN.)
    Clamping inside the log to the dtype's smallest normal number keeps the value exact
    (p = 0 contributes 0) and the gradient finite at p = 0, where d(p log p)/dp is -inf.
    """
    tiny = torch.finfo(probs.dtype).tiny
    return -(probs * torch.log(probs.clamp_min(tiny))).sum(dim=1) / math.log(2.0)


class MaxEntropy(ScoreAcquisition):
    """Max Entropy: the base-2 predictive entropy H[p(x)]."""

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        return entropy_bits(probs)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        # From log_softmax rather than log(p): exact for very confident predictions.
        logp = torch.log_softmax(logits, dim=1)
        return -(logp.exp() * logp).sum(dim=1) / math.log(2.0)


class VarRatio(ScoreAcquisition):
    """Var Ratio, deterministic form: 1 - max_c p_c (a subgradient flows through the max)."""

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        return 1.0 - probs.max(dim=1).values


class Margin(ScoreAcquisition):
    """Margin: one minus the gap between the two largest class probabilities, ``1 - (p_(1) - p_(2))``.

    The smallest margin is the most informative, so the score is its complement, in [0, 1]. A
    subgradient flows through both top probabilities, so a look-ahead can drive it (LADA_MarginMix).
    """

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        top = probs.topk(2, dim=1).values
        return 1.0 - (top[:, 0] - top[:, 1])
