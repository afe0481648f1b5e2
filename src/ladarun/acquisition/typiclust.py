"""TypiClust (Hacohen, Dekel and Weinshall, ICML 2022), docs/methods.md §16.

Cluster the self-supervised embedding of the whole training set into ``|L| + B`` clusters
(at most ``max_clusters``); take the clusters that hold the fewest labeled points, the largest
first, and from each the most *typical* point: the one whose ``K`` nearest neighbours in its
cluster are closest, ``typicality(x) = 1 / mean_{x' in KNN(x)} ||x - x'||`` (the paper's Eq. 2).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans

from ..embedding import SimCLR
from ..errors import ConfigError
from .base import AcquisitionContext, top_k
from .coreset import squared_distances
from .passes import check_enough_candidates
from .self_supervised import EmbeddingAcquisition, seed_from

# The authors' code: exact k-means up to 50 clusters, mini-batch k-means (batches of 5000) above.
EXACT_KMEANS_UP_TO = 50
MINIBATCH = 5000


def cluster_labels(features: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(N,) k-means cluster ids of ``features`` (scikit-learn, ``random_state=seed``)."""
    x = features.numpy()
    if k <= EXACT_KMEANS_UP_TO:
        km: Union[KMeans, MiniBatchKMeans] = KMeans(n_clusters=k, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, batch_size=MINIBATCH, random_state=seed)
    return torch.from_numpy(km.fit_predict(x).astype(np.int64))


def typicality(points: torch.Tensor, members: torch.Tensor, neighbours: int) -> torch.Tensor:
    """(P,) typicality of ``points`` among ``members`` (which hold each point once).

    ``1 / (mean distance to the K nearest other members + 1e-5)``, with K = min(neighbours,
    |members| // 2) as the authors' code sizes it in small clusters; 1 when K = 0.
    """
    k = min(neighbours, members.shape[0] // 2)
    if k == 0:
        return torch.ones(points.shape[0])
    d2 = squared_distances(points, (points * points).sum(1), members, (members * members).sum(1))
    # the k + 1 smallest include the point itself (distance 0), which is dropped
    nearest = d2.topk(k + 1, dim=1, largest=False).values[:, 1:].sqrt()
    return 1.0 / (nearest.mean(dim=1) + 1e-5)


def cluster_order(
    clusters: torch.Tensor, labeled: torch.Tensor, min_size: int, generator: torch.Generator
) -> tuple[list[int], int]:
    """Cluster ids larger than ``min_size``, fewest labeled points first, then largest first,
    ties in a seeded random order; and how many of them hold no labeled point."""
    ids, sizes = clusters.unique(return_counts=True)
    covered = torch.bincount(clusters[labeled], minlength=int(clusters.max()) + 1)[ids]
    keep = sizes > min_size
    ids, sizes, covered = ids[keep], sizes[keep], covered[keep]
    perm = torch.randperm(ids.numel(), generator=generator)
    key = covered[perm] * (clusters.numel() + 1) - sizes[perm]
    return ids[perm][torch.sort(key, stable=True).indices].tolist(), int((covered == 0).sum())


def _next_cluster(
    order: list[int], start: int, clusters: torch.Tensor, available: torch.Tensor, is_candidate
) -> Optional[tuple[torch.Tensor, torch.Tensor, int]]:
    """The first cluster from ``order[start]`` on (cyclically) with a candidate left: its available
    members, its available candidates, and where the next search starts; None if there is none."""
    for step in range(len(order)):
        members = torch.nonzero(available & (clusters == order[(start + step) % len(order)]))
        members = members.flatten()
        chosen = members[is_candidate[members]]
        if chosen.numel():
            return members, chosen, (start + step + 1) % len(order)
    return None


def typiclust_picks(
    features: torch.Tensor,
    clusters: torch.Tensor,
    labeled: torch.Tensor,
    candidates: torch.Tensor,
    budget: int,
    generator: torch.Generator,
    min_size: int = 5,
    neighbours: int = 20,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``budget`` candidates, one per cluster in ``cluster_order``, each its cluster's most typical.

    Typicality is measured among the cluster's unlabeled points not picked yet (the whole pool,
    as the authors' code does), and the pick is the most typical *candidate*; a cluster without a
    candidate left is passed over for the next one. Returns the picks (dataset indices), their
    typicality, and how many of the kept clusters held no labeled point.
    """
    n = features.shape[0]
    available = torch.ones(n, dtype=torch.bool)
    available[labeled] = False
    is_candidate = torch.zeros(n, dtype=torch.bool)
    is_candidate[candidates] = True
    order, uncovered = cluster_order(clusters, labeled, min_size, generator)
    picks, scores, start = [], [], 0
    for _ in range(budget):
        found = _next_cluster(order, start, clusters, available, is_candidate)
        if found is None:  # no kept cluster has a candidate left: a seeded random candidate
            rest = candidates[available[candidates]]
            picks.append(int(rest[top_k(torch.zeros(rest.numel()), 1, generator)]))
            scores.append(float("nan"))
        else:
            members, chosen, start = found
            t = typicality(features[chosen], features[members], neighbours)
            best = int(torch.argmax(t))
            picks.append(int(chosen[best]))
            scores.append(float(t[best]))
        available[picks[-1]] = False
    return torch.tensor(picks), torch.tensor(scores), uncovered


class TypiClust(EmbeddingAcquisition):
    """TypiClust over the candidate subset (default) or the whole pool (``whole_pool=true``).

    The clustering is redone every iteration (``|L| + B`` grows), from a seed drawn from the
    run's generator, as the authors' code clusters afresh every round.
    """

    metric_names = ("typiclust_clusters", "typiclust_uncovered", "typiclust_typicality")
    name = "typiclust"

    def __init__(
        self,
        embedding: Union[SimCLR, Mapping[str, Any]],
        max_clusters: int = 500,
        min_cluster_size: int = 5,
        neighbours: int = 20,
        whole_pool: bool = False,
    ) -> None:
        super().__init__(embedding, whole_pool)
        for key, value in (("max_clusters", max_clusters), ("neighbours", neighbours)):
            if int(value) != value or value < 1:
                raise ConfigError(f"acquisition.{key} must be a positive integer, got {value!r}")
        if int(min_cluster_size) != min_cluster_size or min_cluster_size < 0:
            raise ConfigError(
                f"acquisition.min_cluster_size must be a non-negative integer, got {min_cluster_size!r}"
            )
        self.max_clusters, self.min_cluster_size = int(max_clusters), int(min_cluster_size)
        self.neighbours = int(neighbours)

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        choose_from = self.candidates_for(ctx, candidates)
        check_enough_candidates(self.name, choose_from.numel(), budget)
        features, labeled = self.features(ctx), ctx.labeled.cpu()
        k = min(labeled.numel() + budget, self.max_clusters, features.shape[0])
        clusters = cluster_labels(features, k, seed_from(ctx.generator))
        picks, scores, uncovered = typiclust_picks(
            features,
            clusters,
            labeled,
            choose_from,
            budget,
            ctx.generator,
            self.min_cluster_size,
            self.neighbours,
        )
        self._metrics = {
            "typiclust_clusters": float(k),
            "typiclust_uncovered": float(uncovered),
            "typiclust_typicality": float(scores.nanmean()) if scores.numel() else float("nan"),
        }
        self.query_scores = scores.to(candidates.device)
        return picks.to(candidates.device)
