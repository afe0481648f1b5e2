"""The active-learning protocol: budgets and the training schedule (docs/methods.md §1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError


@dataclass
class Protocol:
    """One preset of conf/protocol/. Every field is overridable, e.g. ``protocol.iterations=5``."""

    iterations: int = 100  # acquisition iterations after the initial training
    initial_per_class: int = 2  # class-balanced initial labeled set
    query: int = 10  # points labeled per iteration (b)
    pool_subset: Optional[int] = 2000  # candidates scored per iteration; None = the whole pool
    initial_epochs: int = 50  # epochs on the initial labeled set
    epochs: int = 50  # epochs after every acquisition
    batch_size: int = 10
    lr: float = 1e-3  # Adam, betas (0.9, 0.999), no weight decay, no schedule
    reinit: bool = False  # False: model and Adam state persist across iterations (warm start)
    eval_batch_size: int = 1000
    score_batch_size: int = 100

    def __post_init__(self) -> None:
        positive = {
            "iterations": self.iterations,
            "initial_per_class": self.initial_per_class,
            "query": self.query,
            "initial_epochs": self.initial_epochs,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "score_batch_size": self.score_batch_size,
        }
        for key, value in positive.items():
            if int(value) != value or value < 1:
                raise ConfigError(f"protocol.{key} must be a positive integer, got {value!r}; set protocol.{key}=N with N >= 1")
        if self.pool_subset is not None and self.pool_subset < self.query:
            raise ConfigError(
                f"protocol.pool_subset={self.pool_subset} is smaller than protocol.query={self.query}: "
                "the candidate subset must hold at least one query; raise pool_subset or set it to null (whole pool)"
            )
        if not self.lr > 0:
            raise ConfigError(f"protocol.lr must be > 0, got {self.lr}")
