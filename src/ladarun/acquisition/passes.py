"""Batched eval-mode passes of the classifier over dataset indices, shared by the acquisitions."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..models.staged import StagedClassifier


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode (BatchNorm running statistics, no dropout), restore on exit."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@torch.no_grad()
def embeddings_and_logits(
    model: StagedClassifier, x: torch.Tensor, indices: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled penultimate vectors ``model.embed`` and the logits of ``x[indices]``, eval mode.

    One trunk pass per batch gives both: in eval mode the head's dropout is the identity, so
    ``fc(embed(x))`` is ``model(x)``. Returned in float32 whatever autocast did.
    """
    emb, logits = [], []
    with eval_mode(model):
        for chunk in indices.split(batch_size):
            h = model.embed(x[chunk])
            emb.append(h.float())
            logits.append(model.fc(h).float())
    if not emb:
        return x.new_zeros(0, model.embed_dim), x.new_zeros(0, model.num_classes)
    return torch.cat(emb), torch.cat(logits)


def check_enough_candidates(name: str, n_candidates: int, budget: int) -> None:
    """A query larger than what there is to choose from is a configuration error."""
    if n_candidates < budget:
        raise ConfigError(
            f"acquisition={name} must select {budget} points but has only {n_candidates} candidates; "
            "lower protocol.query or raise protocol.pool_subset (null = the whole pool)"
        )
