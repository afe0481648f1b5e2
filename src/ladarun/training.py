"""Classifier training and evaluation on device-resident tensors."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F

from .data.base import BatchTransform
from .errors import ConfigError
from .protocol import Protocol


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    batch_size: int,
    transform: Optional[BatchTransform] = None,
) -> torch.Tensor:
    """One shuffled pass over ``x[indices]`` with cross-entropy; returns the summed loss.

    The sum stays on the device (no per-batch sync); the caller reads it once per epoch.
    """
    model.train()
    order = indices[torch.randperm(indices.numel(), device=indices.device)]
    total = torch.zeros((), device=x.device)
    for batch in order.split(batch_size):
        xb = x[batch]
        if transform is not None:
            xb = transform(xb)
        loss = F.cross_entropy(model(xb), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * batch.numel()
    return total


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy in percent over the whole of ``x``, in eval mode."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        correct += (model(xb).argmax(dim=1) == yb).sum()
    return 100.0 * correct.item() / y.numel()


OptimizerFactory = Callable[..., torch.optim.Optimizer]  # (params, lr=) -> optimizer
SchedulerFactory = Callable[..., Any]  # (optimizer, **per-iteration keys) -> LR scheduler

# Scheduler keys that a config may leave null: each iteration fills them from its epoch count,
# so one option (scheduler=cosine) fits the initial training and every later iteration alike.
PER_ITERATION: dict[str, Callable[[int], int]] = {
    "T_max": lambda epochs: epochs,  # cosine: one half-period over the iteration's epochs
    "step_size": lambda epochs: max(1, (epochs + 1) // 2),  # step: decay at half the epochs
}


def make_optimizer(
    model: torch.nn.Module, protocol: Protocol, factory: Optional[OptimizerFactory] = None
) -> torch.optim.Optimizer:
    """The classifier's optimizer (the one place it is built): ``factory`` (the ``optimizer``
    group's partial) at ``protocol.lr``; without one, Adam at ``protocol.lr``, as the paper."""
    if factory is None:
        return torch.optim.Adam(model.parameters(), lr=protocol.lr)
    return factory(model.parameters(), lr=protocol.lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, factory: Optional[SchedulerFactory], epochs: int
) -> Any:
    """One iteration's learning-rate schedule over its ``epochs``, stepped once per epoch, or None.

    Every iteration starts the schedule again from the base rate (``initial_lr``, which torch's
    schedulers store in the optimizer, so a resumed run has it too): a warm-started optimizer
    would otherwise begin the next iteration at the rate the last one decayed to.
    """
    if factory is None:
        return None
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"])
    keywords = getattr(factory, "keywords", {})
    filled = {
        k: f(epochs) for k, f in PER_ITERATION.items() if k in keywords and keywords[k] is None
    }
    return factory(optimizer, **filled)


def check_factory(factory: Any, option: str, first: str, refused: Mapping[str, str]) -> None:
    """Refuse, in one line, a key the option's class does not take (``optimizer=adam
    optimizer.momentum=0.9``), or one of ``refused`` (key -> why); ``first`` is the argument
    ladarun passes itself (the parameters, the optimizer)."""
    target, keywords = factory.func, factory.keywords
    taken = [p for p in inspect.signature(target).parameters if p not in (first, "self")]
    for key in keywords:
        if key in refused:
            raise ConfigError(f"{option}: {refused[key]}")
        if key not in taken:
            name = f"{target.__module__}.{target.__qualname__}"
            raise ConfigError(
                f"{option} ({name}) takes no {key!r}; it takes {', '.join(taken)}: "
                f"remove {key} from the {option.split('=')[0]} config"
            )
