"""Ent w. AdaMixup: the acquisition selects, AdaMixup trains on the new points (docs/methods.md §8).

AdaMixup (Guo, Mao and Zhang, AAAI 2019) learns where to mix: a policy region generator pi
proposes lambda in [a, a + delta] and an intrusion discriminator phi on the classifier's
embedding tells mixed images from originals. Classifier, pi and phi minimise L_cls and L_intr
(Eq. 3): minimising L_intr through lambda pushes pi away from mixes that land on the data
manifold ("manifold intrusion"). As in the LADA port, every epoch takes an Adam step on L_cls,
then one on L_intr, with one optimizer over the classifier, pi and phi.

This is the LADA port used for Table 1's "Ent w. AdaMixup", with its two bugs fixed:
pi and phi are created once and really trained (the official optimizer held stale copies),
and the lambda-weighted loss is per sample (the official code weighted the batch-mean CE).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..acquisition.base import AcquisitionContext
from ..errors import ConfigError
from ..models.staged import StagedClassifier
from .base import Augment
from .mixing import mix, soft_cross_entropy
from .policy import count_parameters


def _conv_side(size: int, pad: int) -> int:
    """Side after the policy's four 3x3 convolutions and two 2x2 max-pools."""
    side = (size + 2 * pad - 2) // 2
    side = side + 2 * pad - 2
    side = (side + 2 * pad - 2) // 2
    return side + 2 * pad - 2


class PolicyRegionGenerator(nn.Module):
    """x_gate -> (a, delta, a'), a softmax over 3, so [a, a + delta] is a sub-interval of [0, 1].

    The LADA port's small CNN: conv3x3 -> 32, ReLU, pool, conv3x3, ReLU, conv3x3, ReLU, pool,
    conv3x3, ReLU, then 512 (ReLU, dropout 0.5), 100, 3. 145,715 parameters on 1x28x28 and
    228,211 on 3x32x32; not counted in Table 1's "5K". The last two linear layers start with
    std 1e-3, so the first proposals are close to (1/3, 1/3, 1/3). Images under 22 pixels are
    convolved with padding 1 instead of none (a [D] choice; the paper's datasets never hit it).
    """

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        pad = 0 if _conv_side(image_size, 0) >= 1 else 1
        side = _conv_side(image_size, pad)
        if side < 1:
            raise ConfigError(
                f"images of {image_size}x{image_size} are too small for AdaMixup's policy network"
            )
        conv = lambda cin: nn.Conv2d(cin, 32, kernel_size=3, padding=pad)
        self.trunk = nn.Sequential(
            conv(in_channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            conv(32),
            nn.ReLU(),
            conv(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            conv(32),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * side * side, 512),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        self.fc1, self.fc2 = nn.Linear(512, 100), nn.Linear(100, 3)
        for layer in (self.fc1, self.fc2):
            nn.init.normal_(layer.weight, std=1e-3)
            nn.init.zeros_(layer.bias)

    def forward(self, x_gate: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(self.fc1(self.trunk(x_gate))).float(), dim=1)


class IntrusionDiscriminator(nn.Module):
    """Embedding -> 2 logits (1 = an original, 0 = a mix): Linear(d -> C), Linear(C -> 2), no
    nonlinearity between them. 5,152 parameters on ResNet-18's 512-d embedding with 10
    classes, the paper's "5K"; sized from ``model.embed_dim`` for other classifiers.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.embed_dim, self.num_classes = int(embed_dim), int(num_classes)
        self.net = nn.Sequential(nn.Linear(embed_dim, num_classes), nn.Linear(num_classes, 2))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


def mixing_lambda(region: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """lambda = a + delta * u with u ~ U(0, 1): reparameterised, always in [a, a + delta] within [0, 1]."""
    return region[:, 0] + region[:, 1] * u


def gate_input(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """pi's input (m1 * x1 + m2 * x2) / 2 with per-pixel standard normals truncated to +-2 sigma."""
    masks = torch.empty((2, *x1.shape), device=x1.device, dtype=x1.dtype)
    nn.init.trunc_normal_(masks, mean=0.0, std=1.0, a=-2.0, b=2.0)
    return (masks[0] * x1 + masks[1] * x2) / 2


def classification_loss(
    model: StagedClassifier,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    lam: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """L_cls summed over its rows (divide by 2 * len(x1) for the mean): soft cross-entropy over the
    mixes lam x1 + (1 - lam) x2 (input space, target lam e_y1 + (1 - lam) e_y2) and the x1
    originals (hard targets), per sample. One forward pass of [x1, mixes], as in the LADA port.
    Reaches pi through ``lam`` twice: in the mixes and in their targets."""
    logits = model(torch.cat([x1, mix(x1, x2, lam)]))
    e1, e2 = (
        F.one_hot(y1, num_classes).to(logits.dtype),
        F.one_hot(y2, num_classes).to(logits.dtype),
    )
    lam_col = lam[:, None].to(logits.dtype)
    targets = torch.cat([e1, lam_col * e1 + (1 - lam_col) * e2])
    return soft_cross_entropy(logits.float(), targets.float())


def intrusion_loss(
    model: StagedClassifier,
    discriminator: IntrusionDiscriminator,
    x1: torch.Tensor,
    x2: torch.Tensor,
    unseen: torch.Tensor,
    lam: torch.Tensor,
) -> torch.Tensor:
    """L_intr: phi's 2-way cross-entropy on the classifier's embeddings, originals (the unseen
    ones and x1) labelled 1, the mixes labelled 0, averaged. One forward pass of [unseen, x1,
    mixes], as in the LADA port. Reaches pi through ``lam`` in the mixes."""
    embedding = model.embed(torch.cat([unseen, x1, mix(x1, x2, lam)]))
    is_original = torch.ones(embedding.shape[0], dtype=torch.long, device=x1.device)
    is_original[-x1.shape[0] :] = 0
    return F.cross_entropy(discriminator(embedding).float(), is_original)


def adamixup_losses(
    model: StagedClassifier,
    discriminator: IntrusionDiscriminator,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    unseen: torch.Tensor,
    lam: torch.Tensor,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaMixup's two losses on one batch: (L_cls summed over its rows, L_intr mean)."""
    return (
        classification_loss(model, x1, y1, x2, y2, lam, num_classes),
        intrusion_loss(model, discriminator, x1, x2, unseen, lam),
    )


# Marks the param group that holds pi and phi in the classifier's optimizer.
_GROUP_KEY = "adamixup"


class AdaMixup(Augment):
    """Ent w. AdaMixup (``augment=adamixup``): selection by the acquisition alone; in every
    training epoch, after the labeled pass, two steps on the points acquired this iteration:
    an Adam step on L_cls, then (gradients zeroed) an Adam step on L_intr (docs/methods.md §8).

    One optimizer covers the classifier, pi and phi, as in the LADA port: the first
    ``extra_step`` adds pi's and phi's parameters to the classifier's Adam (the optimizer the
    loop passes in) as one extra param group with learning rate ``lr`` (default 1e-3, the
    classifier's). In the labeled passes they get no gradient, so Adam leaves them alone.
    Both steps' gradients are taken on the same forward (the same mixes, before either step),
    as the port's ``loss1.backward(retain_graph=True); step; zero_grad; loss2.backward(); step``
    did (its second backward ran on the pre-step graph, which PyTorch now refuses): L_intr's
    gradient is computed first and applied after the L_cls step.
    Which parameters each step moves: L_cls -> classifier (trunk and head) and pi (through
    lambda, in the mixes and in the soft targets); L_intr -> the classifier's trunk, phi and
    pi (through lambda in the mixes: minimising L_intr pushes pi away from intrusions).

    The batch is those points in a fresh random order: x1 = the first half, x2 = the first
    half of another random permutation of all of them (a point may pair with itself), the
    second half are the "unseen" originals. pi and phi persist across iterations with their
    Adam state; a new classifier optimizer (``protocol.reinit``) inherits it. The checkpoint
    keeps pi's and phi's Adam state here, not in the classifier optimizer's state_dict (a hook
    leaves their group out), so a resumed run rebuilds the same single optimizer.

    CSV columns, over the iteration's epochs: ``lambda_mean`` and ``lambda_std`` of the
    lambdas drawn; ``region_a`` and ``region_delta``, the mean policy region [a, a + delta]
    (its start is 1/3, 1/3; a' = 1 - a - delta); ``class_loss`` (L_cls, mean per row) and
    ``intrusion_loss`` (L_intr), before their steps.
    """

    metric_names = (
        "lambda_mean",
        "lambda_std",
        "region_a",
        "region_delta",
        "class_loss",
        "intrusion_loss",
    )

    def __init__(self, lr: float = 1e-3):
        if not lr > 0:
            raise ConfigError(f"augment.lr must be > 0, got {lr}")
        self.lr = float(lr)
        self.policy: Optional[PolicyRegionGenerator] = None
        self.discriminator: Optional[IntrusionDiscriminator] = None
        self.optimizer: Optional[torch.optim.Optimizer] = (
            None  # the classifier's, once pi and phi joined it
        )
        self._adam_state: list[
            dict[str, Any]
        ] = []  # pi's and phi's Adam state, until they join an optimizer
        self._acquired: Optional[torch.Tensor] = None
        # On the device: steps, rows, sum lambda, sum lambda^2, sum a, sum delta, L_cls, L_intr.
        self._sums: Optional[torch.Tensor] = None

    def _build(
        self, in_channels: int, image_size: int, embed_dim: int, num_classes: int, device
    ) -> None:
        self.policy = PolicyRegionGenerator(in_channels, image_size).to(device)
        self.discriminator = IntrusionDiscriminator(embed_dim, num_classes).to(device)
        self.optimizer, self._adam_state = None, []

    def _networks(self) -> tuple[PolicyRegionGenerator, IntrusionDiscriminator]:
        """pi and phi; only once built (``_build``)."""
        assert self.policy is not None and self.discriminator is not None
        return self.policy, self.discriminator

    def _aux_params(self) -> list[nn.Parameter]:
        policy, discriminator = self._networks()
        return list(policy.parameters()) + list(discriminator.parameters())

    def _join(self, optimizer: torch.optim.Optimizer) -> None:
        """Add pi and phi to ``optimizer`` (once per optimizer), carrying their Adam state over."""
        if optimizer is self.optimizer:
            return
        if not isinstance(optimizer, torch.optim.Adam):
            raise ConfigError(
                f"AdaMixup shares the classifier's Adam optimizer, got {type(optimizer).__name__}"
            )
        params = self._aux_params()
        if (
            self.optimizer is not None
        ):  # the loop made a new optimizer (protocol.reinit): pi and phi move over
            self._adam_state = [dict(self.optimizer.state.get(p, {})) for p in params]
        optimizer.add_param_group({"params": params, "lr": self.lr, _GROUP_KEY: True})
        for p, state in zip(params, self._adam_state):
            if (
                state
            ):  # as Optimizer.load_state_dict casts: "step" as saved, the moments to the parameter
                optimizer.state[p] = {
                    k: v if k == "step" else v.to(device=p.device, dtype=p.dtype)
                    for k, v in state.items()
                }
        optimizer.register_state_dict_post_hook(_without_aux_group)
        self.optimizer, self._adam_state = optimizer, []

    def _check_shapes(self, data, model: StagedClassifier) -> None:
        want = (data.in_channels, data.image_size, model.embed_dim, data.num_classes)
        policy, discriminator = self._networks()
        have = (
            policy.in_channels,
            policy.image_size,
            discriminator.embed_dim,
            discriminator.num_classes,
        )
        if want != have:
            raise ConfigError(
                "AdaMixup's networks were built for {}x{s}x{s} images and a {}-d embedding with {} classes, but this "
                "run has {}x{t}x{t} images, a {}-d embedding and {} classes; start it in a fresh run directory "
                "(hydra.run.dir=...)".format(
                    have[0], have[2], have[3], want[0], want[2], want[3], s=have[1], t=want[1]
                )
            )

    def choose_query(
        self, acquisition, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        if budget < 2:
            raise ConfigError(
                f"AdaMixup mixes pairs of acquired points: protocol.query must be >= 2, got {budget}"
            )
        return acquisition.select(ctx, candidates, budget)

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        data, model = ctx.data, ctx.model
        if self.policy is None:
            self._build(
                data.in_channels,
                data.image_size,
                model.embed_dim,
                data.num_classes,
                data.x_train.device,
            )
        self._check_shapes(data, model)
        self._acquired, self._data = acquired, data
        self._sums = torch.zeros(8, device=data.x_train.device)

    def _check_region(self, region: torch.Tensor) -> None:
        """A ConfigError (the CLI prints it as one line) once pi's output is NaN or infinite; the
        loop has already written the finished iterations' rows and checkpoint."""
        if not bool(torch.isfinite(region).all()):  # one device sync per epoch
            raise ConfigError(
                f"AdaMixup's policy region (a, delta, a') became non-finite during training, so the policy network "
                f"diverged; the finished iterations are kept in metrics.csv; rerun with a smaller augment.lr "
                f"(now {self.lr:g}, e.g. augment.lr={self.lr / 10:g}) in a fresh run directory (hydra.run.dir=...)"
            )

    def extra_step(self, model, optimizer):
        if self._acquired is None:
            return None
        self._join(optimizer)
        data, device = self._data, self._acquired.device
        (x1, x2, xu), (first, second) = self._pairs(self._acquired)
        half = first.numel()
        model.train()
        self.policy.train()
        self.discriminator.train()
        region = self.policy(gate_input(x1, x2))
        self._check_region(region)
        lam = mixing_lambda(region, torch.rand(half, device=device))
        # Both losses on this forward, before either step (the port's second backward ran on its
        # pre-step graph). The graph is cut at lambda, so each loss's backward crosses the
        # classifier once, without retain_graph (which torch.compile'd stages refuse); pi's share
        # of each gradient is then pulled from d loss / d lambda through pi's own graph.
        lam_cls, lam_intr = lam.detach().requires_grad_(), lam.detach().requires_grad_()
        y1, y2 = data.y_train[first], data.y_train[second]
        cls_sum = classification_loss(model, x1, y1, x2, y2, lam_cls, data.num_classes)
        intrusion = intrusion_loss(model, self.discriminator, x1, x2, xu, lam_intr)
        cls_mean = cls_sum / (2 * half)
        pi = list(self.policy.parameters())
        pi_ids = {id(p) for p in pi}
        rest = [
            p
            for g in optimizer.param_groups
            for p in g["params"]
            if p.requires_grad and id(p) not in pi_ids
        ]
        # d L_intr: None where it does not reach (the classifier's fc), so step 2 leaves those alone.
        *intr_grads, intr_lam = torch.autograd.grad(intrusion, rest + [lam_intr], allow_unused=True)
        intr_pi = torch.autograd.grad(lam, pi, intr_lam, retain_graph=True)
        optimizer.zero_grad(set_to_none=True)
        cls_mean.backward()
        _set_grads(pi, torch.autograd.grad(lam, pi, lam_cls.grad))
        optimizer.step()  # 1. the step on L_cls: classifier and pi
        optimizer.zero_grad(set_to_none=True)
        _set_grads(rest + pi, [*intr_grads, *intr_pi])
        optimizer.step()  # 2. the step on L_intr: classifier trunk, phi and pi
        optimizer.zero_grad(set_to_none=True)
        lam = lam.detach()
        self._sums += torch.stack(
            [
                torch.ones((), device=device),
                torch.full((), float(half), device=device),
                lam.sum(),
                (lam * lam).sum(),
                region[:, 0].detach().mean(),
                region[:, 1].detach().mean(),
                cls_mean.detach(),
                intrusion.detach(),
            ]
        )
        return cls_sum.detach(), 2 * half

    def _pairs(
        self, points: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """This epoch's mixing pairs of the acquired ``points``: a random half against random
        partners, the other half held out as the discriminator's unseen examples. Returns the
        three image batches (crops and flips applied) and the pairs' dataset indices."""
        data, device, n = self._data, points.device, points.numel()
        order = points[torch.randperm(n, device=device)]
        half = n // 2
        first, unseen = order[:half], order[half:]
        second = order[torch.randperm(n, device=device)[:half]]
        x = data.x_train[torch.cat([first, second, unseen])]
        if data.train_transform is not None:
            x = data.train_transform(x)
        return (x[:half], x[half : 2 * half], x[2 * half :]), (first, second)

    def metrics(self) -> dict[str, float]:
        """Over this iteration's training epochs (read once, after training)."""
        if self._sums is None or float(self._sums[0]) == 0:
            return {}
        steps, rows, lam, lam2, a, delta, cls, intrusion = self._sums.tolist()
        mean = lam / rows
        return {
            "lambda_mean": mean,
            "lambda_std": max(lam2 / rows - mean * mean, 0.0) ** 0.5,
            "region_a": a / steps,
            "region_delta": delta / steps,
            "class_loss": cls / steps,
            "intrusion_loss": intrusion / steps,
        }

    def aux_parameters(self) -> int:
        """The intrusion discriminator's head (Table 1's "5K"); the policy CNN is not counted (§12)."""
        return 0 if self.discriminator is None else count_parameters(self.discriminator)

    def state_dict(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        policy, discriminator = self._networks()
        if self.optimizer is not None:
            adam = [dict(self.optimizer.state.get(p, {})) for p in self._aux_params()]
        else:
            adam = self._adam_state
        return {
            "shapes": (
                policy.in_channels,
                policy.image_size,
                discriminator.embed_dim,
                discriminator.num_classes,
            ),
            "policy": policy.state_dict(),
            "discriminator": discriminator.state_dict(),
            "adam_state": adam,  # pi's and phi's entries of the shared optimizer, in _aux_params order
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if "adam_state" not in state:
            raise ConfigError(
                "this checkpoint was written by an older AdaMixup (a separate optimizer for pi and phi) and cannot "
                "be resumed by this version; start the run in a fresh run directory (hydra.run.dir=...)"
            )
        in_channels, image_size, embed_dim, num_classes = state["shapes"]
        device = next(iter(state["policy"].values())).device
        self._build(in_channels, image_size, embed_dim, num_classes, device)
        policy, discriminator = self._networks()
        policy.load_state_dict(state["policy"])
        discriminator.load_state_dict(state["discriminator"])
        # pi and phi join the optimizer at the next step
        self._adam_state = [dict(s) for s in state["adam_state"]]


def _set_grads(params: list[nn.Parameter], grads) -> None:
    for p, g in zip(params, grads):
        p.grad = g


def _without_aux_group(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state_dict hook: drop pi's and phi's group and state (AdaMixup's checkpoint holds
    them), so the saved state loads into a fresh classifier optimizer."""
    dropped = {
        i for group in state["param_groups"] if group.get(_GROUP_KEY) for i in group["params"]
    }
    return {
        "state": {k: v for k, v in state["state"].items() if k not in dropped},
        "param_groups": [g for g in state["param_groups"] if not g.get(_GROUP_KEY)],
    }
