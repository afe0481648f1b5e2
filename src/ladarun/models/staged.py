"""A classifier split into stages, so that LADA can mix feature maps mid-network.

Stage indexing follows the official LADA code (docs/methods.md §2): ``k = 0`` is the input,
``k = 1`` the output of the stem, ``k = 2`` the output of the first block group, and so on.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StagedClassifier(nn.Module):
    """``stages`` run in order, then the head: average pool -> dropout -> linear.

    ``pool_grid = 1`` is the global average pool (ResNet's). ``pool_grid = g`` averages over a
    g x g grid of cells and concatenates them, so the embedding keeps where in the image a
    feature fired; ``embed_dim`` is then the last stage's channels times g * g.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        embed_dim: int,
        num_classes: int,
        dropout: float = 0.0,
        pool_grid: int = 1,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if int(pool_grid) != pool_grid or pool_grid < 1:
            raise ValueError(f"pool_grid must be a positive integer, got {pool_grid!r}")
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(int(pool_grid))
        # Head dropout exists for MC-dropout acquisitions (BALD); 0 leaves the network deterministic.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(embed_dim, num_classes)
        self.embed_dim = embed_dim
        self.num_classes = num_classes

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _check_k(self, k: int) -> None:
        if not 0 <= k <= self.num_stages:
            raise ValueError(f"stage index k must be in 0..{self.num_stages}, got {k}")

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """h^k(x): run the stages up to and including ``k`` (``k = 0`` returns ``x``)."""
        self._check_k(k)
        for stage in self.stages[:k]:
            x = stage(x)
        return x

    def forward_from(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """f^{k:L}(h): run the stages after ``k``, then the head; returns logits."""
        self._check_k(k)
        for stage in self.stages[k:]:
            h = stage(h)
        return self.head(h)

    def pooled(self, h_last: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(h_last), 1)

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pooled(h_last)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate vector (512-d for ResNet-18), before dropout."""
        return self.pooled(self.features(x, self.num_stages))

    def embed_from(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """The pooled vector from h^k: the stages after ``k``, then the pool (no dropout, no fc).

        ``fc(dropout(embed_from(h, k)))`` equals ``forward_from(h, k)``; MC dropout (BALD)
        runs this once per batch and only dropout and ``fc`` T times.
        """
        self._check_k(k)
        for stage in self.stages[k:]:
            h = stage(h)
        return self.pooled(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)
