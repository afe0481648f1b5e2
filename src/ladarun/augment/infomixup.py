"""InfoMixup: LADA's look-ahead pair acquisition with a learned mixing policy (docs/methods.md §9).

Per acquisition iteration (Algorithm 1, lines 2-24):

1. split the candidate subset into two halves and pair them up;
2. draw the mixing stage k from ``layers`` and cache h^k of both halves once;
3. train a fresh policy pi_phi on the cached maps, classifier frozen, to maximise the
   acquisition score of the virtual instances (Eq. 13), keeping the tau of the lowest-loss
   epoch (Algorithm 1, lines 12-13);
4. score every pair with Eq. 15 and take the top ``budget / 2`` (Eq. 16);
5. in every training epoch, take one step on the virtual instances of the selected pairs with
   lambda ~ Beta(tau*, tau*) drawn afresh (Eq. 17-19).

``estimator`` says where alpha_mix comes from in steps 3-4: ``mc`` (the paper's and the official
code's, the default) runs the frozen classifier from stage k for every lambda sample, forward and
backward; ``tabulated`` evaluates each pair's alpha_i(lambda) once on a lambda grid and
interpolates it (augment/tabulated.py, docs/methods.md §9.6).

``FixedInfoMixup`` is the LADA^fixed ablation: the same look-ahead scoring and training
with tau fixed at 2.0 and no policy network.

Everything the acquisition contributes goes through its ``pair_scorer`` (see
acquisition/base.py), so LADA_EntMix, LADA_VarMix and LADA_VaalMix share this code.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import torch

from ..acquisition.base import Acquisition, AcquisitionContext, PairScorer, top_k
from ..errors import ConfigError
from ..models.staged import StagedClassifier
from ..progress import phase
from ..protocol import Protocol
from ..runtime import check_fits
from .base import Augment
from .mixing import LAMBDA_EPS, beta, virtual_step
from .policy import LambdaNet, count_parameters
from .tabulated import DEFAULT_GRID, TabulatedScorer, lambda_grid

log = logging.getLogger(__name__)

#: Where alpha_mix comes from while the policy trains and in Eq. 15 (module docstring).
ESTIMATORS = ("mc", "tabulated")


class _FrozenEval:
    """Classifier in eval mode with ``requires_grad`` off, restored on exit.

    Gradients still flow through its activations (to lambda), never into its weights.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.model.parameters(), self.flags):
            p.requires_grad_(flag)
        self.model.train(self.was_training)


def draw_layer(layers: Sequence[int], generator: torch.Generator) -> int:
    """k ~ U(layers), once per iteration, from the run's active-learning generator."""
    return int(layers[int(torch.randint(len(layers), (1,), generator=generator))])


@torch.no_grad()
def cache_bytes(model: StagedClassifier, x: torch.Tensor, n: int, k: int) -> int:
    """Bytes of ``cached_features``' output for ``n`` instances, from one instance's h^k."""
    one = model.features(x[:1], k)
    return one.numel() * one.element_size() * n


@torch.no_grad()
def cached_features(
    model: StagedClassifier, x: torch.Tensor, indices: torch.Tensor, k: int, batch: int
) -> torch.Tensor:
    """h^k of ``x[indices]`` in eval mode, computed once per iteration (docs/methods.md §9.3 step 2)."""
    return torch.cat([model.features(x[chunk], k) for chunk in indices.split(batch)])


def tau_spread(tau: torch.Tensor) -> dict[str, float]:
    """Standard deviation (ddof=1), minimum and maximum of tau* over pairs; reads no random stream."""
    return {
        "tau_std": float(tau.std()) if tau.numel() > 1 else 0.0,
        "tau_min": float(tau.min()),
        "tau_max": float(tau.max()),
    }


class InfoMixup(Augment):
    """LADA with InfoMixup (``augment=infomixup``); see the module docstring."""

    needs_per_instance_score = True
    metric_names: tuple[str, ...] = (
        "mix_layer",
        "tau_mean",
        "tau_std",
        "tau_min",
        "tau_max",
        "virtual_score",
        "policy_loss",
    )
    #: A policy network reads the pairs' maps h^k (the ^fixed ablation has none).
    has_policy = True

    def __init__(
        self,
        layers: Sequence[int] = (1, 2),
        samples: int = 5,
        policy_epochs: int = 10,
        policy_batch_size: int = 100,
        policy_lr: float = 5e-5,
        tau_activation: str = "sigmoid",
        faithful_quirks: bool = False,
        estimator: str = "mc",
        grid: int = DEFAULT_GRID,
    ) -> None:
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"augment.estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}"
            )
        self.estimator = estimator
        self.grid = lambda_grid(grid)  # validates the size now, before a run trains anything
        self.layers = [int(k) for k in layers]
        if not self.layers or min(self.layers) < 0:
            raise ConfigError(
                f"augment.layers must be a non-empty list of stage indices >= 0, got {list(layers)}"
            )
        for key, value in (
            ("samples", samples),
            ("policy_epochs", policy_epochs),
            ("policy_batch_size", policy_batch_size),
        ):
            if int(value) != value or value < 1:
                raise ConfigError(f"augment.{key} must be a positive integer, got {value!r}")
        if not policy_lr > 0:
            raise ConfigError(f"augment.policy_lr must be > 0, got {policy_lr}")
        self.samples = int(samples)
        self.policy_epochs = int(policy_epochs)
        self.policy_batch_size = int(policy_batch_size)
        self.policy_lr = float(policy_lr)
        self.tau_activation = tau_activation
        self.faithful_quirks = bool(faithful_quirks)
        # Per-iteration state: the selected pairs, their tau*, the stage k. Gone after training.
        self._selected: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self._k = 0
        self._metrics: dict[str, float] = {}
        self._policy_size: Optional[tuple[int, int]] = None  # (in_channels, map size) last seen

    def check_protocol(self, protocol: Protocol) -> None:
        self._check_even(protocol.query)

    def _check_even(self, query: int) -> None:
        if query % 2:
            raise ConfigError(
                f"{type(self).__name__} labels pairs: protocol.query must be even, got "
                f"{query}; set protocol.query={query + 1}"
            )

    # --- acquisition -----------------------------------------------------------------------
    def choose_query(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        candidates: torch.Tensor,
        budget: int,
    ) -> torch.Tensor:
        self._check_even(budget)  # also when called directly, without check_protocol
        n_pairs = candidates.numel() // 2
        if n_pairs < budget // 2:
            raise ConfigError(
                f"{candidates.numel()} candidates make {n_pairs} pairs, fewer than the {budget // 2} to select; "
                "raise protocol.pool_subset"
            )
        # The candidates come in a fresh random order: pair the i-th of the first half with the
        # i-th of the second (docs/methods.md §9.1).
        first, second = candidates[:n_pairs], candidates[n_pairs : 2 * n_pairs]
        model = ctx.model
        if max(self.layers) >= model.num_stages:
            raise ConfigError(
                f"augment.layers={self.layers}: the model has stages 0..{model.num_stages - 1} to mix at"
            )
        k = draw_layer(self.layers, ctx.generator)
        acquisition.prepare(ctx)
        with _FrozenEval(model):
            h_first, h_second = self._pair_maps(acquisition, ctx, first, second, k)
            scorer = acquisition.pair_scorer(ctx, first, second, k, h_first, h_second)
            if self.estimator == "tabulated":
                scorer = TabulatedScorer(
                    scorer,
                    n_pairs,
                    self.grid.to(ctx.data.x_train.device),
                    chunk=self.policy_batch_size * self.samples,
                )
            tau, policy_loss = self.pair_taus(scorer, h_first, h_second, ctx.generator)
            virtual = self.virtual_scores(scorer, tau)
            total = scorer.base() + virtual  # Eq. 15
        rows = top_k(total, budget // 2, ctx.generator)  # Eq. 16
        self._selected = (first[rows], second[rows], tau[rows])
        self._k = k
        self._metrics = {
            "mix_layer": k,
            "tau_mean": float(tau[rows].mean()),
            "virtual_score": float(virtual[rows].mean()),
        }
        if self.has_policy:
            # tau_mean is over the selected pairs (those trained on); the spread is over every pair
            # the policy scored, to show how far tau* varies with the pair (docs/methods.md §9.3).
            self._metrics.update(tau_spread(tau))
        if policy_loss is not None:
            self._metrics["policy_loss"] = policy_loss
        # queries.csv: both members of a pair carry the pair's Eq. 15 score and each other's index
        self.query_scores = total[rows].repeat(2)
        self.query_partners = torch.cat([second[rows], first[rows]])
        return torch.cat([first[rows], second[rows]])

    def _pair_maps(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        first: torch.Tensor,
        second: torch.Tensor,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's cached h^k of both members of every pair, for the policy and the
        pair scorer; (P, 0) placeholders when nothing reads them (LADA_VaalMix^fixed)."""
        n_pairs, x = first.numel(), ctx.data.x_train
        if not (self.has_policy or acquisition.pair_scorer_reads_maps):
            return x.new_empty(n_pairs, 0), x.new_empty(n_pairs, 0)
        # protocol.pool_subset=null caches the whole pool: 12-19 GB for CIFAR or SVHN
        check_fits(
            cache_bytes(ctx.model, x, 2 * n_pairs, k),
            x.device,
            f"{type(self).__name__}'s feature maps h^{k} of {2 * n_pairs} candidates",
            "set protocol.pool_subset (the paper's 2000)",
        )
        h_first = cached_features(ctx.model, x, first, k, ctx.score_batch_size)
        return h_first, cached_features(ctx.model, x, second, k, ctx.score_batch_size)

    @torch.no_grad()
    def virtual_scores(self, scorer: PairScorer, tau: torch.Tensor) -> torch.Tensor:
        """(1/N) sum_n alpha_mix(lambda_n), lambda_n ~ Beta(tau_i, tau_i): the last term of Eq. 15."""
        out = []
        for rows in torch.arange(tau.numel(), device=tau.device).split(self.policy_batch_size):
            lam = beta(tau[rows]).sample((self.samples,))  # (N, B)
            out.append(scorer.mixed(lam, rows).mean(0))
        return torch.cat(out)

    def pair_taus(
        self,
        scorer: PairScorer,
        h_first: torch.Tensor,
        h_second: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, Optional[float]]:
        """tau* per pair from a freshly trained policy (docs/methods.md §9.3); also the final epoch's loss.

        The loss of a batch is -sum_pairs mean_n alpha_mix (Eq. 13). The tau recorded for
        each pair during an epoch (before that batch's update) is kept from the epoch with the
        lowest loss; no extra policy pass is made afterwards. The reported ``policy_loss`` is
        the final epoch's loss per pair, i.e. -mean alpha_mix of its virtual instances.
        """
        n_pairs, channels, size = h_first.shape[0], h_first.shape[1], h_first.shape[-1]
        policy = LambdaNet(2 * channels, size, self.tau_activation).to(h_first.device)
        self._policy_size = (2 * channels, size)
        optimizer = torch.optim.Adam(policy.parameters(), lr=self.policy_lr)
        best_loss, best_tau = math.inf, None
        last_loss: Optional[float] = None
        for epoch in phase(range(self.policy_epochs), "InfoMixup policy"):
            order = torch.randperm(n_pairs, generator=generator).to(h_first.device)
            tau_epoch = torch.empty(n_pairs, device=h_first.device)
            loss_sum = torch.zeros((), device=h_first.device)
            for rows in order.split(self.policy_batch_size):
                tau = policy(torch.cat([h_first[rows], h_second[rows]], dim=1)).squeeze(1).float()
                tau_epoch[rows] = tau.detach()
                # A lambda at the very edge of (0, 1) has an infinite reparameterisation
                # gradient; drop that pair's gradient rather than poison the whole step.
                tau.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
                lam = beta(tau).rsample((self.samples,)).clamp(LAMBDA_EPS, 1 - LAMBDA_EPS)  # (N, B)
                # sum over the batch, mean over the N samples (Eq. 13)
                loss = -scorer.mixed(lam, rows).mean(0).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
            epoch_loss = float(loss_sum) / n_pairs  # per pair; one host sync per epoch
            if not math.isfinite(epoch_loss):
                log.warning(
                    "InfoMixup: the policy loss became non-finite in epoch %d; stopping the policy's training "
                    "for this iteration and keeping the last finite tau.",
                    epoch + 1,
                )
                if best_tau is None:  # not one finite epoch: the policy as it stands
                    best_tau = torch.nan_to_num(self._taus_of(policy, h_first, h_second), nan=1.0)
                break
            last_loss = epoch_loss
            if epoch_loss < best_loss:
                best_loss, best_tau = epoch_loss, tau_epoch
        assert best_tau is not None  # policy_epochs >= 1, and the first epoch sets it either way
        return best_tau, last_loss

    @torch.no_grad()
    def _taus_of(
        self, policy: torch.nn.Module, h_first: torch.Tensor, h_second: torch.Tensor
    ) -> torch.Tensor:
        """tau of every pair under ``policy`` as it stands, in batches."""
        rows = torch.arange(h_first.shape[0], device=h_first.device).split(self.policy_batch_size)
        return torch.cat(
            [policy(torch.cat([h_first[r], h_second[r]], dim=1)).squeeze(1) for r in rows]
        )

    # --- training ------------------------------------------------------------------------------
    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        self._data = ctx.data

    def extra_step(self, model, optimizer):
        if self._selected is None:
            return None
        first, second, tau = self._selected
        lam = beta(tau).sample()  # resampled every epoch, no gradient to tau (§9.4)
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

    def aux_parameters(self) -> int:
        """The policy network's size on the maps it last saw (it is re-created every iteration)."""
        if self._policy_size is None:
            return 0
        return count_parameters(LambdaNet(*self._policy_size, tau_activation=self.tau_activation))


class FixedInfoMixup(InfoMixup):
    """LADA^fixed (``augment=infomixup_fixed``): tau = 2.0 for every pair, no policy network.

    Scoring draws N lambdas ~ Beta(2, 2) per pair; training resamples Beta(2, 2) every epoch.
    """

    metric_names = ("mix_layer", "tau_mean", "virtual_score")
    has_policy = False

    def __init__(
        self,
        tau: float = 2.0,
        layers: Sequence[int] = (1, 2),
        samples: int = 5,
        faithful_quirks: bool = False,
        estimator: str = "mc",
        grid: int = DEFAULT_GRID,
    ):
        super().__init__(
            layers=layers,
            samples=samples,
            faithful_quirks=faithful_quirks,
            estimator=estimator,
            grid=grid,
        )
        if not tau > 0:
            raise ConfigError(f"augment.tau must be > 0, got {tau}")
        self.tau = float(tau)

    def pair_taus(self, scorer, h_first, h_second, generator):
        return torch.full((h_first.shape[0],), self.tau, device=h_first.device), None

    def aux_parameters(self) -> int:
        return 0
