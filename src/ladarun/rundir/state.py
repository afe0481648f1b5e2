"""Where a run stands between iterations, besides its networks: what a checkpoint carries from
one process to the next (baal's idea: the labeled set is one array of labeling iterations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .checkpoint import rng_state, set_rng_state


@dataclass
class RunState:
    """The labeled set, the accuracies so far and the run's history of processes."""

    # labeled_at[i] = the iteration at which point i was labeled (0 = initial set), -1 = pool.
    labeled_at: torch.Tensor
    initial_state: Optional[dict[str, torch.Tensor]] = None  # protocol.reinit's starting weights
    next_iteration: int = 0
    best: float = -1.0
    acc: float = 0.0
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run
    resumes: list[int] = field(default_factory=list)  # iterations at which it resumed

    @property
    def n_labeled(self) -> int:
        return int((self.labeled_at >= 0).sum())

    def evaluated(self, acc: float) -> None:
        """Take the test accuracy of the iteration just trained."""
        self.acc, self.best = acc, max(self.best, acc)

    def record(self, iteration: int) -> dict[str, Any]:
        """metrics.csv's first columns for ``iteration``."""
        return {
            "iteration": iteration,
            "n_labeled": self.n_labeled,
            "test_acc": self.acc,
            "best_acc": self.best,
        }

    def snapshot(
        self, iteration: int, elapsed: float, gen: torch.Generator, **parts: Any
    ) -> dict[str, Any]:
        """The checkpoint after ``iteration``: this state, every part's ``state_dict`` and every
        random stream (``elapsed``: seconds this process has run)."""
        return {
            "iteration": iteration,
            **{name: part.state_dict() for name, part in parts.items()},
            "labeled_at": self.labeled_at,
            "initial_state": self.initial_state,
            "best_acc": self.best,
            "test_acc": self.acc,
            "elapsed_s": self.elapsed_before + elapsed,
            "resumes": self.resumes,
            "rng": rng_state(gen),
        }

    def restore(
        self, saved: dict[str, Any], device: torch.device, gen: torch.Generator, **parts: Any
    ) -> None:
        """Continue after the checkpoint ``saved``, exactly as if never stopped."""
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        self.labeled_at, self.initial_state = saved["labeled_at"].to(device), saved["initial_state"]
        self.best, self.acc = saved["best_acc"], saved["test_acc"]
        self.elapsed_before = saved["elapsed_s"]
        self.next_iteration = saved["iteration"] + 1
        self.resumes = saved["resumes"] + [self.next_iteration]
        set_rng_state(saved["rng"], gen)
