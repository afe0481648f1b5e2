"""Where a run stands between iterations, besides its networks: what a checkpoint carries from
one process to the next (baal's idea: the labeled set is one array of labeling iterations)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..errors import ConfigError, DataMismatchError
from .checkpoint import rng_state, set_rng_state

log = logging.getLogger("ladarun.loop")


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
    # What a CPU run's digits depend on besides its config, checked when it resumes: the data
    # its indices point into, the intra-op thread count and the CPU model (docs/methods.md §14).
    data_fingerprint: str = ""
    threads: int = 0
    cpu: str = ""
    other_cpus: list[str] = field(default_factory=list)  # CPUs it resumed on, other than ``cpu``

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
            "rng": rng_state(gen, self.labeled_at.device),
            "data_fingerprint": self.data_fingerprint,
            "threads": self.threads,
            "cpu": self.cpu,
            "other_cpus": self.other_cpus,
        }

    def restore(
        self, saved: dict[str, Any], device: torch.device, gen: torch.Generator, **parts: Any
    ) -> None:
        """Continue after the checkpoint ``saved``, exactly as if never stopped; refuse what
        would not continue it exactly (other data, another thread count on the CPU)."""
        self._check_same_execution(saved, device)
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        self.labeled_at, self.initial_state = saved["labeled_at"].to(device), saved["initial_state"]
        self.best, self.acc = saved["best_acc"], saved["test_acc"]
        self.elapsed_before = saved["elapsed_s"]
        self.next_iteration = saved["iteration"] + 1
        self.resumes = saved["resumes"] + [self.next_iteration]
        set_rng_state(saved["rng"], gen)

    def _check_same_execution(self, saved: dict[str, Any], device: torch.device) -> None:
        """Raise when the checkpoint was made on other data or (on the CPU) another thread
        count; warn when it was made on another CPU model. Checkpoints from before these
        records carry none of them and are not checked."""
        before = saved.get("data_fingerprint")
        if before and self.data_fingerprint and before != self.data_fingerprint:
            raise DataMismatchError(
                f"the data under data_dir are not the data this run started on (fingerprint "
                f"{before}, now {self.data_fingerprint}: other files, or the same images in "
                "another order), so its saved labeled indices would point at other images; put "
                "back the files it started on, or run it again in a fresh folder"
            )
        threads = saved.get("threads")
        if device.type == "cpu" and threads and self.threads and threads != self.threads:
            raise ConfigError(
                f"this run started on {threads} CPU threads and would resume on {self.threads}; a "
                "CPU run's digits depend on the thread count, so it would not continue as it "
                f"started: resume it with OMP_NUM_THREADS={threads} (under hydra/launcher=local, "
                "with the same hydra.launcher.n_jobs), or delete checkpoint.pt to start again"
            )
        self.other_cpus = list(saved.get("other_cpus", []))
        if saved.get("cpu") and self.cpu and saved["cpu"] != self.cpu:
            self.other_cpus.append(self.cpu)
            log.warning(
                "resuming on %s, but this run started on %s: from here it may differ from an "
                "uninterrupted run (summary.json lists the other CPUs in other_cpus)",
                self.cpu,
                saved["cpu"],
            )
            self.cpu = saved["cpu"]
