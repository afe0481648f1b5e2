"""Coreset (Sener & Savarese 2018): k-center greedy on the penultimate embeddings, docs/methods.md §4.

The labeled set is the initial set of centres. Each of ``budget`` steps takes the candidate
farthest from its nearest centre and makes it a centre. Distances are computed on the device
from squared norms and one matrix product per chunk, so the whole 60,000-point pool
(``whole_pool=true``, as the original papers) fits in memory: the largest temporary is one
chunk x |labeled| block, never pool x pool.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from .base import Acquisition, AcquisitionContext
from .passes import check_enough_candidates, embeddings_and_logits


def squared_distances(
    a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor
) -> torch.Tensor:
    """||a_i - b_j||^2 (len(a), len(b)) from precomputed squared norms, clipped at 0."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)


def k_center_greedy(
    points: torch.Tensor, centres: torch.Tensor, budget: int, chunk_elements: int = 1 << 22
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in ``points`` (N, D) of ``budget`` greedy k-center picks, and the covering radius.

    ``centres`` (M, D), possibly empty, are the fixed initial centres. The radius is the
    largest distance from a point to its nearest centre after the picks are added. Ties go
    to the first point in order (the candidates arrive in a random order). No point is
    picked twice, even when all remaining distances are 0.
    """
    n = points.shape[0]
    if budget > n:
        raise ValueError(f"cannot pick {budget} of {n} points")
    with torch.autocast(
        points.device.type, enabled=False
    ):  # distances in float32 even under autocast
        points = points.float()
        p_sq = (points * points).sum(1)
        if centres.shape[0] == 0:
            d2 = torch.full((n,), float("inf"), device=points.device)
        else:
            centres = centres.float()
            c_sq = (centres * centres).sum(1)
            rows = max(1, chunk_elements // centres.shape[0])
            d2 = torch.cat(
                [
                    squared_distances(p, s, centres, c_sq).min(1).values
                    for p, s in zip(points.split(rows), p_sq.split(rows))
                ]
            )
        picks = []
        for _ in range(budget):
            i = torch.argmax(d2).view(1)  # stays on the device: no host sync per pick
            picks.append(i)
            d2 = torch.minimum(
                d2,
                squared_distances(points, p_sq, points.index_select(0, i), p_sq.index_select(0, i))[
                    :, 0
                ],
            )
            d2.index_fill_(0, i, -1.0)  # a centre now; -1 keeps it below every other point
        radius = d2.max().clamp_min(0.0).sqrt()
    return torch.cat(picks), radius


class Coreset(Acquisition):
    """k-center greedy over the candidate subset (``whole_pool=false``, default) or the whole pool.

    Embeddings of the labeled set and the candidates come from one eval-mode pass of the
    same model state, on the normalised images without training augmentation (§4 pitfall).
    """

    metric_names = ("coreset_radius",)

    def __init__(self, whole_pool: bool = False, chunk_elements: int = 1 << 22) -> None:
        if int(chunk_elements) != chunk_elements or chunk_elements < 1:
            raise ConfigError(
                f"acquisition.chunk_elements must be a positive integer, got {chunk_elements!r}"
            )
        self.whole_pool = bool(whole_pool)
        self.chunk_elements = int(chunk_elements)
        self._radius: Optional[torch.Tensor] = None  # the last selection's covering radius

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        if self.whole_pool:
            candidates = ctx.pool
        check_enough_candidates("coreset", candidates.numel(), budget)
        emb, _ = embeddings_and_logits(
            ctx.model, ctx.data.x_train, torch.cat([ctx.labeled, candidates]), ctx.score_batch_size
        )
        n_labeled = ctx.labeled.numel()
        picks, self._radius = k_center_greedy(
            emb[n_labeled:], emb[:n_labeled], budget, self.chunk_elements
        )
        return candidates[picks]

    def extra_metrics(self) -> dict[str, float]:
        return {} if self._radius is None else {"coreset_radius": float(self._radius)}
