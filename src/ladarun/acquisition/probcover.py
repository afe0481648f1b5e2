"""ProbCover (Yehuda, Dekel, Hacohen and Weinshall, NeurIPS 2022), docs/methods.md §17.

Every point of the self-supervised embedding covers the points of its ball of radius δ. ProbCover
greedily picks the candidate whose ball holds the most points not yet covered (by the labeled
set or by earlier picks), ``budget`` times: a greedy maximum coverage of the training set. δ is
the largest radius whose balls are *pure* for a fraction ``purity`` (0.95) of the points, purity
being measured with k-means pseudo-labels (k = the number of classes), the paper's rule.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Union

import torch
from sklearn.cluster import KMeans

from ..embedding import SimCLR
from ..errors import ConfigError
from .base import AcquisitionContext, top_k
from .coreset import squared_distances
from .passes import check_enough_candidates
from .self_supervised import EmbeddingAcquisition

CHUNK = 256  # rows of a distance block against the whole training set (256 x 60,000 floats)


def _blocks(rows: torch.Tensor, features: torch.Tensor):
    """(row indices, squared distances to every point) per chunk of ``rows``."""
    sq = (features * features).sum(1)
    for chunk in rows.split(CHUNK):
        yield chunk, squared_distances(features[chunk], sq[chunk], features, sq)


def purity_delta(features: torch.Tensor, classes: int, purity: float, seed: int) -> float:
    """The largest δ for which a fraction ``purity`` of the δ-balls are pure (the paper's rule).

    A ball ``{x' : ||x - x'|| < δ}`` is pure when every point in it has x's k-means label (k =
    ``classes``), i.e. when δ is at most r(x), x's distance to the nearest point of another
    cluster. The fraction of pure balls falls with δ, so the largest δ with purity >= ``purity``
    is the ceil(purity N)-th largest r(x), exactly (the paper searches a grid of δ).
    """
    labels = torch.from_numpy(
        KMeans(n_clusters=classes, random_state=seed).fit_predict(features.numpy())
    )
    r2 = torch.empty(features.shape[0])
    sq = (features * features).sum(1)
    for c in labels.unique():
        inside, outside = torch.nonzero(labels == c).flatten(), torch.nonzero(labels != c).flatten()
        if outside.numel() == 0:  # one cluster: every ball is pure
            r2[inside] = float("inf")
            continue
        others, half_sq = features[outside], 0.5 * sq[outside]
        for chunk in inside.split(CHUNK):
            # min ||a - b||^2 over b = ||a||^2 - 2 max(a.b - ||b||^2 / 2): one product per block
            best = (features[chunk] @ others.T - half_sq).max(dim=1).values
            r2[chunk] = (sq[chunk] - 2 * best).clamp_min(0.0)
    m = math.ceil(purity * features.shape[0])
    return float(r2.sort(descending=True).values[m - 1].sqrt())


def delta_key(classes: int, purity: float) -> str:
    """The name under which the purity rule's δ is kept beside its embedding in the cache."""
    return f"probcover_delta_classes{classes}_purity{purity}"


def probcover_picks(
    features: torch.Tensor,
    delta: float,
    labeled: torch.Tensor,
    candidates: torch.Tensor,
    budget: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Greedy max coverage: ``budget`` candidates, each covering the most uncovered points.

    Returns the picks (dataset indices), the number of points each newly covered when picked,
    the fraction of all points covered afterwards, and the most points any candidate's ball
    holds (1: the balls hold nothing but their centres). Ties, including the all-covered case
    where every count is 0 (the paper then picks at random), go in a seeded random order.
    """
    covered = torch.zeros(features.shape[0], dtype=torch.bool)
    for _, d2 in _blocks(labeled, features):
        covered |= (d2 < delta**2).any(dim=0)
    rows, cols = [], []
    positions = torch.arange(candidates.numel())
    for part, (_, d2) in zip(positions.split(CHUNK), _blocks(candidates, features)):
        r, c = torch.nonzero(d2 < delta**2, as_tuple=True)
        rows.append(part[r])
        cols.append(c)
    row, col = torch.cat(rows), torch.cat(cols)
    largest = int(torch.bincount(row, minlength=candidates.numel()).max())
    picked = torch.zeros(candidates.numel(), dtype=torch.bool)
    picks, gains = [], []
    for _ in range(budget):
        alive = ~covered[col]
        degree = torch.bincount(row[alive], minlength=candidates.numel()).float()
        degree[picked] = -1.0  # never picked twice
        j = int(top_k(degree, 1, generator))
        picked[j] = True
        picks.append(j)
        gains.append(degree[j])
        covered[col[row == j]] = True
    return candidates[picks], torch.stack(gains), float(covered.float().mean()), largest


class ProbCover(EmbeddingAcquisition):
    """ProbCover over the candidate subset (default) or the whole pool (``whole_pool=true``)."""

    name = "probcover"
    metric_names = ("probcover_delta", "probcover_coverage", "probcover_gain")

    def __init__(
        self,
        embedding: Union[SimCLR, Mapping[str, Any]],
        delta: Optional[float] = None,
        purity: float = 0.95,
        whole_pool: bool = False,
    ) -> None:
        super().__init__(embedding, whole_pool)
        if delta is not None and not delta > 0:
            raise ConfigError(
                f"acquisition.delta must be positive, or null for the purity rule; got {delta!r}"
            )
        if not 0 < purity <= 1:
            raise ConfigError(f"acquisition.purity must be in (0, 1], got {purity!r}")
        self.delta, self.purity = delta, float(purity)
        self._delta: Optional[float] = delta  # the purity rule's, once computed

    def radius(self, ctx: AcquisitionContext) -> float:
        """δ: the configured one, or the purity rule's on this embedding, computed once per
        embedding and kept in the cache beside it (with the embedding's own seed for its
        k-means, so every run of the dataset gets the same δ)."""
        if self._delta is None:
            features, classes = self.features(ctx), ctx.data.num_classes
            assert self.cache is not None and self.cache_file is not None  # features() set them
            found = self.cache.derived(
                self.cache_file,
                delta_key(classes, self.purity),
                lambda: purity_delta(features, classes, self.purity, self.spec.seed),
            )
            if not found > 0:
                raise ConfigError(
                    f"ProbCover's purity rule gives δ = 0 at acquisition.purity={self.purity}: "
                    "lower acquisition.purity or set acquisition.delta"
                )
            self._delta = found
        return self._delta

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        choose_from = self.candidates_for(ctx, candidates)
        check_enough_candidates(self.name, choose_from.numel(), budget)
        features, delta = self.features(ctx), self.radius(ctx)
        picks, gains, coverage, largest = probcover_picks(
            features, delta, ctx.labeled.cpu(), choose_from, budget, ctx.generator
        )
        if largest <= 1:
            raise ConfigError(
                f"ProbCover's δ = {delta:.4g} covers nothing: no candidate's δ-ball holds a point "
                "besides itself; raise acquisition.delta (or set it to null for the purity rule)"
            )
        self._metrics = {
            "probcover_delta": delta,
            "probcover_coverage": coverage,
            "probcover_gain": float(gains.mean()),
        }
        self.query_scores = gains.to(candidates.device)
        return picks.to(candidates.device)
