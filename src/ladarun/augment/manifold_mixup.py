"""Ent w. ManifoldMixup: the pipelined baseline of Table 1 (docs/methods.md §7, the code's "VanillaMixup").

Selection is the acquisition's alone (top ``budget`` points); mixup is applied afterwards to
the newly acquired points. Comparing it with InfoMixup isolates what looking ahead adds.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..acquisition.base import Acquisition, AcquisitionContext
from ..errors import ConfigError
from .base import Augment
from .infomixup import _FrozenEval, cached_features, draw_layer
from .mixing import beta, virtual_step


class ManifoldMixup(Augment):
    """Per epoch: split the points acquired this iteration into random disjoint pairs, draw
    lambda ~ Beta(alpha, alpha) per pair, one step on the mixes at stage k (drawn once per
    iteration from ``layers``).

    ``virtual_score`` (Figure 6a) is the acquisition's mean score of such virtual instances
    at acquisition time (N lambda draws over one random pairing), when the acquisition has a
    per-instance score.
    """

    metric_names = ("mix_layer", "tau_mean", "virtual_score")

    def __init__(
        self,
        alpha: float = 2.0,
        layers: Sequence[int] = (1, 2),
        samples: int = 5,
        faithful_quirks: bool = False,
    ):
        if not alpha > 0:
            raise ConfigError(f"augment.alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.layers = [int(k) for k in layers]
        if not self.layers or min(self.layers) < 0:
            raise ConfigError(
                f"augment.layers must be a non-empty list of stage indices >= 0, got {list(layers)}"
            )
        self.samples = int(samples)
        self.faithful_quirks = bool(faithful_quirks)
        self._acquired: torch.Tensor | None = None
        self._metrics: dict[str, float] = {}

    def choose_query(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        candidates: torch.Tensor,
        budget: int,
    ):
        if budget < 2:
            raise ConfigError(
                f"ManifoldMixup mixes pairs of acquired points: protocol.query must be >= 2, got {budget}"
            )
        if max(self.layers) >= ctx.model.num_stages:
            raise ConfigError(
                f"augment.layers={self.layers}: the model has stages 0..{ctx.model.num_stages - 1} to mix at"
            )
        chosen = acquisition.select(ctx, candidates, budget)
        self._k = draw_layer(self.layers, ctx.generator)
        self._metrics = {"mix_layer": self._k, "tau_mean": self.alpha}
        if acquisition.per_instance:
            self._metrics["virtual_score"] = self._virtual_score(acquisition, ctx, chosen)
        return chosen

    def _pairs(
        self, points: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        order = points[torch.randperm(points.numel(), generator=generator).to(points.device)]
        half = points.numel() // 2
        return order[:half], order[half : 2 * half]

    def _virtual_score(
        self, acquisition: Acquisition, ctx: AcquisitionContext, chosen: torch.Tensor
    ) -> float:
        first, second = self._pairs(chosen, ctx.generator)
        with _FrozenEval(ctx.model), torch.no_grad():
            h_first = cached_features(
                ctx.model, ctx.data.x_train, first, self._k, ctx.score_batch_size
            )
            h_second = cached_features(
                ctx.model, ctx.data.x_train, second, self._k, ctx.score_batch_size
            )
            scorer = acquisition.pair_scorer(ctx, first, second, self._k, h_first, h_second)
            tau = torch.full((first.numel(),), self.alpha, device=chosen.device)
            lam = beta(tau).sample((self.samples,))
            return float(
                scorer.mixed(lam, torch.arange(first.numel(), device=chosen.device)).mean()
            )

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        self._acquired, self._data = acquired, ctx.data

    def extra_step(self, model, optimizer):
        if self._acquired is None:
            return None
        first, second = self._pairs(self._acquired)  # a fresh random pairing every epoch
        lam = beta(torch.full((first.numel(),), self.alpha, device=first.device)).sample()
        return virtual_step(
            model,
            optimizer,
            self._data,
            first,
            second,
            lam,
            self._k,
            zero_grad=not self.faithful_quirks,
        )

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)
