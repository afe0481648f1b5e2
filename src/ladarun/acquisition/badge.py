"""BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings, docs/methods.md §5.

The gradient embedding of a candidate with probabilities ``p``, pooled feature ``h`` and
pseudo-label ``y = argmax p`` is ``g = a (x) h`` with ``a = onehot(y) - p`` (the negative
gradient of CE(y) w.r.t. the fc weight; the bias is left out). It is C x D-dimensional
(5,120 for ResNet-18 on 10 classes) and never built: distances use the factorisation

    ||g_x - g_y||^2 = ||a_x||^2 ||h_x||^2 + ||a_y||^2 ||h_y||^2 - 2 (a_x . a_y)(h_x . h_y)

(the speed-up the current BADGE repository uses), so a k-means++ step costs one product of
the candidates with one centre's ``a`` and one with its ``h``.

scikit-learn's ``kmeans_plusplus`` is not used: it needs the explicit vectors, draws several
local trials per centre (greedy k-means++) and uses NumPy's RNG, not the run's generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Acquisition, AcquisitionContext
from .passes import check_enough_candidates, embeddings_and_logits


def gradient_factors(
    logits: torch.Tensor, embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = onehot(argmax p) - p`` (N, C) and ``h`` (N, D): g = a (x) h, without building g."""
    probs = torch.softmax(logits.float(), dim=1)
    a = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype) - probs
    return a, embeddings.float()


def gradient_embeddings(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The explicit (N, C * D) embeddings, row-major ``a_c h_d``; for tests on small inputs only."""
    return (a[:, :, None] * h[:, None, :]).flatten(1)


class FactorisedDistances:
    """Squared distances between gradient embeddings ``a (x) h`` from the two factors."""

    def __init__(self, a: torch.Tensor, h: torch.Tensor):
        self.a, self.h = a, h
        self.sq_norms = (a * a).sum(1) * (h * h).sum(1)  # ||g||^2 = ||a||^2 ||h||^2

    def to(self, j: torch.Tensor) -> torch.Tensor:
        """(N,) ||g_x - g_j||^2 for every x, one centre ``j`` (a 1-element index tensor); clipped at 0."""
        cross = (self.a @ self.a.index_select(0, j).T)[:, 0] * (
            self.h @ self.h.index_select(0, j).T
        )[:, 0]
        return (self.sq_norms + self.sq_norms.index_select(0, j) - 2.0 * cross).clamp_min(0.0)

    def pairwise(self) -> torch.Tensor:
        """(N, N) all squared distances; for tests."""
        cross = (self.a @ self.a.T) * (self.h @ self.h.T)
        return (self.sq_norms[:, None] + self.sq_norms[None, :] - 2.0 * cross).clamp_min(0.0)


def kmeans_pp_seeding(
    distances: FactorisedDistances, budget: int, generator: torch.Generator
) -> torch.Tensor:
    """Positions of ``budget`` k-means++ seeds (BADGE's variant).

    The first seed is the point with the largest ||g||; each next one is drawn with
    probability D(x)^2 / sum D^2, D = distance to the nearest seed so far, from ``generator``.
    Seeds are never drawn again (their weight is exactly 0). When every remaining D is 0
    (duplicates of seeds), the next seed is uniform among the points not yet chosen.
    """
    n = distances.sq_norms.numel()
    if budget > n:
        raise ValueError(f"cannot seed {budget} of {n} points")
    device = distances.sq_norms.device
    with torch.autocast(device.type, enabled=False):  # float32 products even under autocast
        first = torch.argmax(distances.sq_norms).view(1)
        seeds = [first]
        chosen = torch.zeros(n, dtype=torch.bool, device=device)
        chosen[first] = True
        d2 = distances.to(first)
        for _ in range(budget - 1):
            # float64 on the CPU for the draw from the run's CPU generator: one (N,) copy per
            # seed, `budget - 1` small syncs per iteration. The tiny floor makes the all-zero
            # case a uniform draw over the unchosen points and is invisible otherwise.
            weights = torch.where(chosen, 0.0, d2.double() + 1e-300).cpu()
            j = torch.multinomial(weights, 1, generator=generator).to(device)
            seeds.append(j)
            chosen[j] = True
            d2 = torch.minimum(d2, distances.to(j))
    return torch.cat(seeds)


class BADGE(Acquisition):
    """BADGE over the candidate subset (``acquisition=badge``); batch-mode, no per-instance score."""

    metric_names = ("badge_grad_norm", "badge_classes")

    def __init__(self) -> None:
        self._metrics: dict[str, torch.Tensor] = {}

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        check_enough_candidates("badge", candidates.numel(), budget)
        emb, logits = embeddings_and_logits(
            ctx.model, ctx.data.x_train, candidates, ctx.score_batch_size
        )
        a, h = gradient_factors(logits, emb)
        distances = FactorisedDistances(a, h)
        seeds = kmeans_pp_seeding(distances, budget, ctx.generator)
        self._metrics = {
            # mean ||g|| of the query (how uncertain), and how many pseudo-labels it spans (how diverse)
            "badge_grad_norm": distances.sq_norms[seeds].sqrt().mean(),
            "badge_classes": torch.unique(logits[seeds].argmax(1)).numel(),
        }
        return candidates[seeds]

    def extra_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._metrics.items()}
