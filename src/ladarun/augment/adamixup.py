"""Ent w. AdaMixup: the acquisition selects, AdaMixup trains on the new points (METHODS.md §8).

AdaMixup (Guo, Mao and Zhang, AAAI 2019) learns where to mix: a policy region generator pi
proposes lambda in [a, a + delta] and an intrusion discriminator phi on the classifier's
embedding tells mixed images from originals. Classifier, pi and phi jointly minimise
L_cls + L_intr (Eq. 3): minimising L_intr through lambda pushes pi away from mixes that land
on the data manifold ("manifold intrusion").

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
            raise ConfigError(f"images of {image_size}x{image_size} are too small for AdaMixup's policy network")
        conv = lambda cin: nn.Conv2d(cin, 32, kernel_size=3, padding=pad)  # noqa: E731
        self.trunk = nn.Sequential(
            conv(in_channels), nn.ReLU(), nn.MaxPool2d(2),
            conv(32), nn.ReLU(),
            conv(32), nn.ReLU(), nn.MaxPool2d(2),
            conv(32), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * side * side, 512), nn.ReLU(), nn.Dropout(0.5),
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


def adamixup_losses(
    model: StagedClassifier,
    policy: PolicyRegionGenerator,
    discriminator: IntrusionDiscriminator,
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    unseen: torch.Tensor,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaMixup's two losses on one batch: (L_cls summed over its rows, L_intr mean, lambda).

    - lambda = a + delta * u per pair, from pi on the noisy blend of x1 and x2;
    - L_cls: soft cross-entropy over the mixes (target lambda e_y1 + (1 - lambda) e_y2) and
      the x1 originals (hard targets), per sample, summed (divide by its row count for the mean);
    - L_intr: 2-way cross-entropy of phi on the embeddings, originals (x1 and the unseen
      ones) labelled 1, mixes labelled 0, averaged.
    One forward pass of the classifier covers mixes, x1 and the unseen originals.
    """
    n = x1.shape[0]
    lam = mixing_lambda(policy(gate_input(x1, x2)), torch.rand(n, device=x1.device))
    x_mix = mix(x1, x2, lam)  # input space
    h_last = model.features(torch.cat([x_mix, x1, unseen]), model.num_stages)
    logits, embedding = model.head(h_last[: 2 * n]), model.pooled(h_last)
    e1, e2 = F.one_hot(y1, num_classes).to(logits.dtype), F.one_hot(y2, num_classes).to(logits.dtype)
    targets = torch.cat([lam[:, None] * e1 + (1 - lam[:, None]) * e2, e1])
    cls_sum = soft_cross_entropy(logits.float(), targets.float())
    is_original = torch.ones(embedding.shape[0], dtype=torch.long, device=x1.device)
    is_original[:n] = 0
    intrusion = F.cross_entropy(discriminator(embedding).float(), is_original)
    return cls_sum, intrusion, lam


class AdaMixup(Augment):
    """Ent w. AdaMixup (``augment=adamixup``): selection by the acquisition alone; in every
    training epoch, one joint step of L_cls + L_intr on the points acquired this iteration.

    The batch is those points in a fresh random order: x1 = the first half, x2 = the first
    half of another random permutation of all of them (a point may pair with itself), the
    second half are the "unseen" originals. pi and phi persist across iterations with their
    own Adam (``lr``, default 1e-3 as the classifier's); they are in the checkpoint.

    CSV columns, means over the iteration's epochs: ``lambda_mean``; ``policy_loss``, the
    joint objective L_cls + L_intr that pi minimises; ``intrusion_loss``, the discriminator's
    2-way cross-entropy.
    """

    metric_names = ("lambda_mean", "policy_loss", "intrusion_loss")

    def __init__(self, lr: float = 1e-3):
        if not lr > 0:
            raise ConfigError(f"augment.lr must be > 0, got {lr}")
        self.lr = float(lr)
        self.policy: Optional[PolicyRegionGenerator] = None
        self.discriminator: Optional[IntrusionDiscriminator] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._acquired: Optional[torch.Tensor] = None
        self._sums: Optional[torch.Tensor] = None  # on the device: (steps, lambda, policy, intrusion)

    def _build(self, in_channels: int, image_size: int, embed_dim: int, num_classes: int, device) -> None:
        self.policy = PolicyRegionGenerator(in_channels, image_size).to(device)
        self.discriminator = IntrusionDiscriminator(embed_dim, num_classes).to(device)
        self.optimizer = torch.optim.Adam(
            list(self.policy.parameters()) + list(self.discriminator.parameters()), lr=self.lr
        )

    def _check_shapes(self, data, model: StagedClassifier) -> None:
        want = (data.in_channels, data.image_size, model.embed_dim, data.num_classes)
        have = (self.policy.in_channels, self.policy.image_size, self.discriminator.embed_dim, self.discriminator.num_classes)
        if want != have:
            raise ConfigError(
                "AdaMixup's networks were built for {}x{s}x{s} images and a {}-d embedding with {} classes, but this "
                "run has {}x{t}x{t} images, a {}-d embedding and {} classes; start it in a fresh run directory "
                "(hydra.run.dir=...)".format(have[0], have[2], have[3], want[0], want[2], want[3], s=have[1], t=want[1])
            )

    def acquire(self, acquisition, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int) -> torch.Tensor:
        if budget < 2:
            raise ConfigError(f"AdaMixup mixes pairs of acquired points: protocol.query must be >= 2, got {budget}")
        return acquisition.select(ctx, candidates, budget)

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        data, model = ctx.data, ctx.model
        if self.policy is None:
            self._build(data.in_channels, data.image_size, model.embed_dim, data.num_classes, data.x_train.device)
        self._check_shapes(data, model)
        self._acquired, self._data = acquired, data
        self._sums = torch.zeros(4, device=data.x_train.device)

    def extra_step(self, model, optimizer):
        if self._acquired is None:
            return None
        data, points = self._data, self._acquired
        device, n = points.device, points.numel()
        order = points[torch.randperm(n, device=device)]
        half = n // 2
        first, unseen = order[:half], order[half:]
        second = order[torch.randperm(n, device=device)[:half]]
        x = data.x_train[torch.cat([first, second, unseen])]
        if data.train_transform is not None:
            x = data.train_transform(x)
        x1, x2, xu = x[:half], x[half : 2 * half], x[2 * half :]
        model.train()
        self.policy.train()
        cls_sum, intrusion, lam = adamixup_losses(
            model, self.policy, self.discriminator, x1, data.y_train[first], x2, data.y_train[second], xu, data.num_classes
        )
        cls_mean = cls_sum / (2 * half)
        optimizer.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)
        (cls_mean + intrusion).backward()  # the joint objective, minimised over classifier, pi and phi
        optimizer.step()
        self.optimizer.step()
        self._sums += torch.stack([torch.ones((), device=device), lam.detach().mean(), (cls_mean + intrusion).detach(), intrusion.detach()])
        return cls_sum.detach(), 2 * half

    def metrics(self) -> dict[str, float]:
        """Means over this iteration's training epochs (read once, after training)."""
        if self._sums is None or float(self._sums[0]) == 0:
            return {}
        steps, lam, policy, intrusion = (self._sums / self._sums[0]).tolist()
        return {"lambda_mean": lam, "policy_loss": policy, "intrusion_loss": intrusion}

    def aux_parameters(self) -> int:
        """The intrusion discriminator's head (Table 1's "5K"); the policy CNN is not counted (§12)."""
        return 0 if self.discriminator is None else count_parameters(self.discriminator)

    def state_dict(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        return {
            "shapes": (self.policy.in_channels, self.policy.image_size, self.discriminator.embed_dim, self.discriminator.num_classes),
            "policy": self.policy.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        in_channels, image_size, embed_dim, num_classes = state["shapes"]
        device = next(iter(state["policy"].values())).device
        self._build(in_channels, image_size, embed_dim, num_classes, device)
        self.policy.load_state_dict(state["policy"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
