"""InfoSTN: LADA's look-ahead acquisition with a spatial transformer (LADA_EntSTN, docs/methods.md §10).

Per acquisition iteration:

1. train a fresh, identity-initialised STN T_phi on the candidate subset with the classifier
   frozen, to maximise the acquisition score of the transformed points, alpha(T_phi(x))
   (Eq. 6); keep phi from the epoch with the lowest loss;
2. score every candidate by the look-ahead alpha(x) + alpha(T_phi(x)) (Eq. 7) and take the
   top ``budget`` single points;
3. in every training epoch, take one step on the transformed acquired points with their hard
   labels (a spatial transform preserves the label), T_phi frozen.

``FixedInfoSTN`` is LADA_EntSTN^fixed: the same, except that the STN is trained with the
conventional objective of Eq. 1 (minimise the cross-entropy of f(T_phi(x)) on the labeled
set), so it gets no feedback from the acquisition.

Scores go through the acquisition's ``score_inputs``, so any per-instance acquisition drives it.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

from ..acquisition.base import Acquisition, AcquisitionContext, top_k
from ..errors import ConfigError
from ..progress import phase
from .base import Augment
from .infomixup import _FrozenEval
from .policy import count_parameters
from .stn import SpatialTransformer

log = logging.getLogger(__name__)


def hard_label_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """One gradient step of mean cross-entropy on ``(x, y)``; returns the summed loss and the count."""
    model.train()
    loss_sum = F.cross_entropy(model(x), y, reduction="sum")
    optimizer.zero_grad(set_to_none=True)
    (loss_sum / y.numel()).backward()
    optimizer.step()
    return loss_sum.detach(), int(y.numel())


class InfoSTN(Augment):
    """LADA with InfoSTN (``augment=infostn``); see the module docstring.

    CSV columns: ``theta_dist``, the mean ||theta(x) - [I | 0]|| of the trained STN over the
    candidates (0 = the identity); ``stn_loss``, the STN's loss in its best epoch (here
    -mean alpha(T(x)) per candidate); ``virtual_score``, the mean alpha(T(x)) of the selected
    points. All three are empty in an iteration whose STN training failed (non-finite loss).
    """

    needs_per_instance_score = True
    metric_names = ("theta_dist", "stn_loss", "virtual_score")

    def __init__(
        self,
        epochs: int = 10,
        batch_size: int = 100,
        lr: float = 1e-3,
        bound: Optional[float] = 0.25,
    ):
        for key, value in (("epochs", epochs), ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ConfigError(f"augment.{key} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ConfigError(f"augment.lr must be > 0, got {lr}")
        if bound is not None and not bound > 0:
            raise ConfigError(
                f"augment.bound must be > 0 (or null for an unbounded STN), got {bound}"
            )
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.bound = None if bound is None else float(bound)
        # Per-iteration state: this iteration's STN (None when its training failed) and the
        # points acquired with it. Nothing persists across iterations: phi is re-initialised.
        self._stn: Optional[SpatialTransformer] = None
        self._acquired: Optional[torch.Tensor] = None
        self._metrics: dict[str, float] = {}
        self._shape: Optional[tuple[int, int]] = None  # (channels, image size) last seen

    # --- what the STN is trained on (the only difference between the two variants) ----------
    def stn_inputs(self, ctx: AcquisitionContext, candidates: torch.Tensor) -> torch.Tensor:
        """Dataset indices the STN trains on: the candidate subset (Eq. 6)."""
        return candidates

    def stn_loss(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        x_virtual: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of one batch of transformed points: -mean alpha(T(x)), i.e. maximise the score."""
        return -acquisition.score_inputs(ctx, x_virtual).float().mean()

    # --- acquisition -----------------------------------------------------------------------
    def choose_query(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        candidates: torch.Tensor,
        budget: int,
    ) -> torch.Tensor:
        data = ctx.data
        self._stn, self._acquired, self._metrics = None, None, {}
        self._shape = (data.in_channels, data.image_size)
        stn = SpatialTransformer(data.in_channels, data.image_size, self.bound).to(
            data.x_train.device
        )
        acquisition.prepare(ctx)
        with _FrozenEval(ctx.model):
            losses = self.train_stn(stn, acquisition, ctx, self.stn_inputs(ctx, candidates))
            base, virtual, dist = self.scores(stn, acquisition, ctx, candidates)
        # One host sync for the whole iteration: did every loss and score stay finite?
        finite = bool(
            torch.isfinite(losses).all()
            & torch.isfinite(virtual).all()
            & torch.isfinite(dist).all()
        )
        if not finite:
            log.warning(
                "%s: the STN's loss or scores became non-finite; this iteration selects by the acquisition "
                "score alone and trains without transformed points.",
                type(self).__name__,
            )
            rows = top_k(base, budget, ctx.generator)
            self.query_scores = base[rows]
            return candidates[rows]
        rows = top_k(base + virtual, budget, ctx.generator)  # Eq. 7
        self.query_scores = (base + virtual)[rows]
        self._stn = stn
        self._metrics = {
            "theta_dist": float(dist.mean()),
            "stn_loss": float(losses.min()),
            "virtual_score": float(virtual[rows].mean()),
        }
        return candidates[rows]

    def train_stn(
        self,
        stn: SpatialTransformer,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Train ``stn`` in place and leave it at its best epoch's weights; returns the (epochs,) losses.

        The classifier is frozen by the caller. An epoch's loss is the mean batch loss per
        input. The weights after every epoch are kept (5.5K parameters each) so the best epoch
        is picked at the end without a host sync per epoch.
        """
        x_all, device = ctx.data.x_train, ctx.data.x_train.device
        optimizer = torch.optim.Adam(stn.parameters(), lr=self.lr)
        epoch_losses: list[torch.Tensor] = []
        snapshots: list[dict[str, torch.Tensor]] = []
        for _ in phase(range(self.epochs), "InfoSTN transformer"):
            order = inputs[torch.randperm(inputs.numel(), generator=ctx.generator).to(device)]
            total = torch.zeros((), device=device)
            for rows in order.split(self.batch_size):
                loss = self.stn_loss(acquisition, ctx, stn(x_all[rows]), rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * rows.numel()
            epoch_losses.append(total / inputs.numel())
            snapshots.append({k: v.detach().clone() for k, v in stn.state_dict().items()})
        losses = torch.stack(epoch_losses)
        # argmin on the device; a NaN epoch makes the caller drop the STN anyway.
        best = torch.nan_to_num(losses, nan=float("inf")).argmin()
        stn.load_state_dict({k: torch.stack([s[k] for s in snapshots])[best] for k in snapshots[0]})
        return losses

    @torch.no_grad()
    def scores(
        self,
        stn: SpatialTransformer,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """alpha(x), alpha(T(x)) and ||theta(x) - [I | 0]|| of every candidate, each (N,)."""
        base, virtual, dist = [], [], []
        for rows in candidates.split(ctx.score_batch_size):
            x = ctx.data.x_train[rows]
            theta = stn.theta(x)
            base.append(acquisition.score_inputs(ctx, x).float())
            virtual.append(acquisition.score_inputs(ctx, stn.transform(x, theta)).float())
            dist.append(stn.distance_from_identity(theta))
        return torch.cat(base), torch.cat(virtual), torch.cat(dist)

    # --- training ------------------------------------------------------------------------------
    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        self._acquired, self._data = acquired, ctx.data

    def extra_step(self, model, optimizer):
        """One step on T_phi(x) of the points acquired this iteration, with their hard labels."""
        if self._stn is None or self._acquired is None:
            return None
        x = self._data.x_train[self._acquired]
        if self._data.train_transform is not None:
            x = self._data.train_transform(x)
        with torch.no_grad():
            x = self._stn(x)  # phi is frozen: virtual instances of this iteration only
        return hard_label_step(model, optimizer, x, self._data.y_train[self._acquired])

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def aux_parameters(self) -> int:
        """The STN's size on the images it last saw (5,520 on 1x28x28; it is re-created every iteration)."""
        if self._shape is None:
            return 0
        return count_parameters(SpatialTransformer(*self._shape, bound=self.bound))


class FixedInfoSTN(InfoSTN):
    """LADA_EntSTN^fixed (``augment=infostn_fixed``): the STN minimises the cross-entropy of
    f(T_phi(x)) on the labeled set (Eq. 1) instead of maximising the acquisition score.

    Scoring, selection and training are InfoSTN's; ``stn_loss`` is the labeled-set CE.
    """

    def stn_inputs(self, ctx: AcquisitionContext, candidates: torch.Tensor) -> torch.Tensor:
        return ctx.labeled

    def stn_loss(self, acquisition, ctx, x_virtual, rows):
        return F.cross_entropy(ctx.model(x_virtual).float(), ctx.data.y_train[rows])
