"""ALFA-Mix (Parvaneh et al., CVPR 2022), closed-form variant, docs/methods.md §18.

In the classifier's penultimate space, each candidate's feature ``z`` is interpolated towards
every class anchor ``z*_y`` (the mean feature of the labeled points of class y):
``z~ = (1 - α) ⊙ z + α ⊙ z*_y`` with the closed-form α that changes the loss most for a step of
norm ε (the paper's Eq. 6):

    α* = ε ||z* - z|| ∇_z ℓ ⊘ (||∇_z ℓ|| (z* - z)),   ℓ = CE(f(z), ŷ),  ŷ = argmax f(z)

(``⊘`` elementwise; ε is the cap divided by sqrt(D), as the authors' code scales it). A candidate
whose predicted label flips for some anchor is *inconsistent*. The cap grows in steps of
``alpha_cap`` up to 1 until more than ``budget`` candidates are inconsistent; k-means with
``budget`` clusters on their L2-normalised features then picks the point nearest each centre.
Missing picks (too few inconsistent candidates) are drawn at random from the other candidates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from ..errors import ConfigError
from .base import Acquisition, AcquisitionContext, top_k
from .passes import check_enough_candidates, embeddings_and_logits
from .self_supervised import seed_from


def class_anchors(z: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """(C, D) mean feature per class; a class without a labeled point gets the mean of all."""
    sums = torch.zeros(classes, z.shape[1]).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=classes).float()[:, None]
    return torch.where(counts > 0, sums / counts.clamp_min(1), z.mean(dim=0))


def inconsistent(
    z: torch.Tensor,
    anchors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    alpha_cap: float,
    budget: int,
) -> tuple[torch.Tensor, float]:
    """(N,) which features' predictions flip under the closed-form interpolation, and the cap used.

    The head is linear (``logits = z W^T + b``), so ``∇_z CE(f(z), ŷ) = (p - e_ŷ) W`` exactly.
    Caps ``alpha_cap, 2 alpha_cap, ...`` up to 1 are tried in turn; flags accumulate over them,
    and the search stops once more than ``budget`` features are flagged.
    """
    logits = F.linear(z, weight, bias)
    pred = logits.argmax(dim=1)
    grad = (torch.softmax(logits, dim=1) - F.one_hot(pred, weight.shape[0]).float()) @ weight
    grad_norm = grad.norm(dim=1, keepdim=True).clamp_min(torch.finfo(z.dtype).tiny)
    flagged = torch.zeros(z.shape[0], dtype=torch.bool)
    cap = 0.0
    for step in range(1, math.ceil(1.0 / alpha_cap - 1e-9) + 1):
        cap = min(step * alpha_cap, 1.0)
        eps = cap / math.sqrt(z.shape[1])
        for anchor in anchors:
            diff = anchor - z
            alpha = eps * diff.norm(dim=1, keepdim=True) / grad_norm * grad / (diff + 1e-8)
            mixed = (1 - alpha) * z + alpha * anchor
            flagged |= F.linear(mixed, weight, bias).argmax(dim=1) != pred
        if int(flagged.sum()) > budget:
            break
    return flagged, cap


def nearest_to_centres(features: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Positions of the points nearest each of ``k`` k-means centres of ``features`` (distinct)."""
    x = features.numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    d2 = ((x - km.cluster_centers_[km.labels_]) ** 2).sum(axis=1)
    picks = [
        int(np.flatnonzero(km.labels_ == c)[np.argmin(d2[km.labels_ == c])])
        for c in range(k)
        if (km.labels_ == c).any()
    ]
    return torch.tensor(picks, dtype=torch.long)


class ALFAMix(Acquisition):
    """ALFA-Mix over the candidate subset, interpolating the classifier's penultimate features."""

    metric_names = ("alfamix_inconsistent", "alfamix_cap", "alfamix_random")

    def __init__(self, alpha_cap: float = 0.2) -> None:
        if not 0 < alpha_cap <= 1:
            raise ConfigError(f"acquisition.alpha_cap must be in (0, 1], got {alpha_cap!r}")
        self.alpha_cap = float(alpha_cap)
        self._metrics: dict[str, float] = {}

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        check_enough_candidates("alfamix", candidates.numel(), budget)
        labeled = ctx.labeled
        emb, _ = embeddings_and_logits(
            ctx.model, ctx.data.x_train, torch.cat([labeled, candidates]), ctx.score_batch_size
        )
        emb = emb.cpu()
        z_labeled, z = emb[: labeled.numel()], emb[labeled.numel() :]
        anchors = class_anchors(z_labeled, ctx.data.y_train[labeled].cpu(), ctx.data.num_classes)
        fc = ctx.model.fc
        weight, bias = fc.weight.detach().float().cpu(), fc.bias.detach().float().cpu()
        flagged, cap = inconsistent(z, anchors, weight, bias, self.alpha_cap, budget)
        rows = torch.nonzero(flagged).flatten()
        if rows.numel():
            k = min(budget, rows.numel())
            rows = rows[
                nearest_to_centres(F.normalize(z[rows], dim=1), k, seed_from(ctx.generator))
            ]
        missing = budget - rows.numel()
        if missing:  # too few inconsistent candidates: the rest at random, as the authors' code
            rest = torch.ones(candidates.numel(), dtype=torch.bool)
            rest[rows] = False
            others = torch.nonzero(rest).flatten()
            rows = torch.cat(
                [rows, others[top_k(torch.zeros(others.numel()), missing, ctx.generator)]]
            )
        self._metrics = {
            "alfamix_inconsistent": float(flagged.sum()),
            "alfamix_cap": cap,
            "alfamix_random": float(missing),
        }
        return candidates[rows.to(candidates.device)]

    def extra_metrics(self) -> dict[str, float]:
        return dict(self._metrics)
