"""The active-learning protocol: budgets and the training schedule (docs/methods.md §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError


@dataclass
class Protocol:
    """The budgets and training schedule of Algorithm 1 (docs/methods.md §1).

    The values live in one place, the ``protocol`` node of conf/config.yaml (the paper's), which
    the presets of conf/protocol/ override; every field is overridable, e.g.
    ``protocol.iterations=5``.
    """

    iterations: int  # acquisition iterations after the initial training
    initial_per_class: int  # class-balanced initial labeled set
    query: int  # points labeled per iteration (b)
    pool_subset: Optional[int]  # candidates scored per iteration; None = the whole pool
    initial_epochs: int  # epochs on the initial labeled set
    epochs: int  # epochs after every acquisition
    batch_size: int
    lr: float  # the optimizer's (the optimizer group; the paper's Adam)
    reinit: bool  # False: model and optimizer state persist across iterations (warm start)
    eval_batch_size: int
    score_batch_size: int
    val_size: int = 0  # labeled validation points, drawn apart from the budget (0: none)
    early_stopping: bool = False  # keep each iteration's best validation epoch

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
            if not _is_int(value) or value < 1:
                raise ConfigError(
                    f"protocol.{key} must be a positive integer, got {value!r}; set protocol.{key}=N with N >= 1"
                )
        if self.pool_subset is not None and not (
            _is_int(self.pool_subset) and self.pool_subset >= 1
        ):
            raise ConfigError(
                f"protocol.pool_subset must be a positive integer or null, got {self.pool_subset!r}; "
                "set protocol.pool_subset=N or protocol.pool_subset=null (the whole pool)"
            )
        if not isinstance(self.reinit, bool):
            raise ConfigError(f"protocol.reinit must be true or false, got {self.reinit!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise ConfigError(
                f"protocol.lr must be a number, got {self.lr!r}; set e.g. protocol.lr=0.001"
            )
        if self.pool_subset is not None and self.pool_subset < self.query:
            raise ConfigError(
                f"protocol.pool_subset={self.pool_subset} is smaller than protocol.query={self.query}: "
                "the candidate subset must hold at least one query; raise pool_subset or set it to null (whole pool)"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(
                f"protocol.lr must be a finite number > 0, got {self.lr}; set e.g. protocol.lr=0.001"
            )
        self._check_validation()

    def _check_validation(self) -> None:
        if not _is_int(self.val_size) or self.val_size < 0:
            raise ConfigError(
                f"protocol.val_size must be an integer >= 0, got {self.val_size!r}; 0 holds out none"
            )
        if not isinstance(self.early_stopping, bool):
            raise ConfigError(
                f"protocol.early_stopping must be true or false, got {self.early_stopping!r}"
            )
        if self.early_stopping and self.val_size == 0:
            raise ConfigError(
                "protocol.early_stopping=true needs a validation set: set protocol.val_size=N (N > 0)"
            )


def _is_int(value: object) -> bool:
    """An integer, not a bool (True would pass as 1), a float or a string."""
    return isinstance(value, int) and not isinstance(value, bool)
