"""LADA's mixing primitive (docs/methods.md §7) and the one training step on virtual instances (Eq. 17-19)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Beta

from ..data.base import ActiveDataset
from ..models.staged import StagedClassifier

# docs/methods.md §14: with small tau, Beta samples can hit exactly 0 or 1, where the implicit
# reparameterisation gradient is infinite; keep both away from the edges.
TAU_MIN = 1e-3
LAMBDA_EPS = 1e-6


def beta(tau: torch.Tensor) -> Beta:
    """Beta(tau, tau), symmetric; ``tau`` is clamped to >= TAU_MIN.

    validate_args=False: the clamp already guarantees the support, and validation would
    cost a device-to-host sync on every draw.
    """
    tau = tau.clamp_min(TAU_MIN)
    return Beta(tau, tau, validate_args=False)


def mix(h_first: torch.Tensor, h_second: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lam * h_first + (1 - lam) * h_second with a per-row ``lam`` of shape (B,) or (B, 1) (Eq. 12)."""
    return torch.lerp(
        h_second, h_first, lam.reshape(-1, *([1] * (h_first.dim() - 1))).to(h_first.dtype)
    )


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_c y_c log softmax(logits)_c, summed over the batch."""
    return -(targets * F.log_softmax(logits, dim=1)).sum()


def virtual_step(
    model: StagedClassifier,
    optimizer: torch.optim.Optimizer,
    data: ActiveDataset,
    first: torch.Tensor,
    second: torch.Tensor,
    lam: torch.Tensor,
    k: int,
    zero_grad: bool = True,
) -> tuple[torch.Tensor, int]:
    """One gradient step on the virtual instances of pairs ``(first[i], second[i])`` (Eq. 17-19).

    The model is in train mode; each member gets its own (augmented) forward pass to stage
    ``k``, so BatchNorm sees the B members of one side at a time, as in the official code.
    The target is the mixed soft label ``lam e_y + (1 - lam) e_y'``; the loss is the soft
    cross-entropy summed over the batch and divided by B. ``zero_grad=False`` reproduces the
    official code's leak of the last labeled batch's gradient into this step (§9.4 quirk).
    Returns the summed loss (a 0-d tensor) and B.
    """
    model.train()
    x_first, x_second = data.x_train[first], data.x_train[second]
    if data.train_transform is not None:
        x_first, x_second = data.train_transform(x_first), data.train_transform(x_second)
    h = mix(model.features(x_first, k), model.features(x_second, k), lam)
    lam = lam.reshape(-1, 1)
    y_first = F.one_hot(data.y_train[first], data.num_classes).to(h.dtype)
    y_second = F.one_hot(data.y_train[second], data.num_classes).to(h.dtype)
    targets = lam * y_first + (1 - lam) * y_second
    loss_sum = soft_cross_entropy(model.forward_from(h, k), targets)
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    (loss_sum / first.numel()).backward()
    optimizer.step()
    return loss_sum.detach(), int(first.numel())
