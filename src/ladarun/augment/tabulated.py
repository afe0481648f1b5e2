"""The tabulated look-ahead estimator of InfoMixup (``augment.estimator=tabulated``, docs/methods.md §9.6).

The classifier is frozen while the mixing policy trains, so for every pair i the score of its
virtual instance is one fixed function alpha_i(lambda) on [0, 1]. :class:`TabulatedScorer`
evaluates it once per iteration on a grid of lambdas (forward passes only, no autograd graph)
and afterwards answers ``mixed(lam, rows)`` by piecewise-linear interpolation in the table,
differentiable in ``lam``. It is a :class:`PairScorer` itself, so the policy's training (the
Beta reparameterisation, Eq. 13, the tau of the best epoch) and the Eq. 15 scores run the
same code as the ``mc`` estimator; only where alpha_mix comes from changes.
"""

from __future__ import annotations

import math

import torch

from ..acquisition.base import PairScorer
from ..errors import ConfigError

#: Default grid size, chosen from the measured interpolation error (docs/methods.md §9.6).
DEFAULT_GRID = 9


def lambda_grid(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``size`` Chebyshev-Lobatto points on [0, 1], both ends included, denser towards the ends.

    The sigmoid policy's tau lies in (0, 1), where Beta(tau, tau) puts most of its mass near
    lambda = 0 and 1; the grid spacing there is about (pi / (size - 1))^2 / 4 instead of
    1 / (size - 1), so the interpolant is finest where the samples fall.
    """
    if int(size) != size or size < 2:
        raise ConfigError(
            f"augment.grid must be an integer >= 2 (lambda grid points), got {size!r}"
        )
    steps = torch.arange(int(size), dtype=torch.float64) * (math.pi / (int(size) - 1))
    grid = (1.0 - torch.cos(steps)) / 2.0
    grid[0], grid[-1] = (
        0.0,
        1.0,
    )  # exact ends: alpha_i(0) and alpha_i(1) are the members' own scores
    return grid.to(device=device, dtype=torch.float32)


def interpolate(grid: torch.Tensor, table: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``table`` (B, G, F), sampled at ``grid`` (G,), at ``lam`` (S, B) -> (S, B, F).

    Differentiable in ``lam`` (the slope of the segment it falls in) and in ``table``. ``lam``
    outside [0, 1] is extrapolated from the end segments (the estimator only asks inside).
    """
    g = grid.numel()
    # segment j holds grid[j] <= lam < grid[j + 1]; lam = 1 falls in the last one
    seg = (torch.searchsorted(grid, lam.detach().contiguous(), right=True) - 1).clamp(0, g - 2)
    weight = (lam - grid[seg]) / (grid[seg + 1] - grid[seg])
    pair = torch.arange(table.shape[0], device=table.device).expand_as(seg)
    y0, y1 = table[pair, seg], table[pair, seg + 1]  # (S, B, F)
    return torch.lerp(y0, y1, weight.unsqueeze(-1).to(y0.dtype))


class TabulatedScorer(PairScorer):
    """``scorer``'s alpha_mix of every pair tabulated on a lambda grid, then interpolated.

    What is tabulated is the scorer's ``mixed_features`` (the classifier's logits for ent and
    var, the pooled vector before MC dropout for bald, D's logit for vaal), which are piecewise
    linear in lambda for ReLU networks; the score is applied to the interpolated features, so
    the interpolation is exact between the network's kinks, and BALD still draws fresh dropout
    masks for every lambda sample. ``chunk`` bounds the instances of one tabulating pass
    (pairs x grid points), so tabulating never holds more activations at once than one ``mc``
    policy step does.
    """

    def __init__(self, scorer: PairScorer, n_pairs: int, grid: torch.Tensor, chunk: int):
        self.scorer, self.grid = scorer, grid
        rows_per_pass = max(1, chunk // grid.numel())
        self.table = self.tabulate(scorer, n_pairs, grid, rows_per_pass)

    @staticmethod
    @torch.no_grad()
    def tabulate(
        scorer: PairScorer, n_pairs: int, grid: torch.Tensor, rows_per_pass: int
    ) -> torch.Tensor:
        """(P, G, F) features at ``grid``: forward passes only, ``rows_per_pass`` pairs at a time."""
        parts = []
        for rows in torch.arange(n_pairs, device=grid.device).split(rows_per_pass):
            lam = grid.unsqueeze(1).expand(grid.numel(), rows.numel())  # (G, B)
            parts.append(scorer.mixed_features(lam, rows).float().transpose(0, 1))
        return torch.cat(parts)

    @torch.no_grad()
    def base(self) -> torch.Tensor:
        """alpha(x_i) + alpha(x'_i) from the table's ends: lambda = 1 is x_i itself and lambda = 0
        is x'_i (Eq. 12), so the scorer's own ``base`` would repeat those forwards."""
        return self.score_features(self.table[:, -1]) + self.score_features(self.table[:, 0])

    def mixed(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.mixed_features(lam, rows))

    def mixed_features(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        table = self.table[rows]
        features = interpolate(self.grid, table, lam.reshape(-1, rows.numel()))
        return features.view(*lam.shape, table.shape[-1])

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.scorer.score_features(features)
