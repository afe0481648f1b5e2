"""Hydra's basic sweeper, ladarun's way: one line per failed job, one per run Ctrl-C stopped.

It lives here because Hydra instantiates plugins only from the ``hydra_plugins`` package;
conf/config.yaml selects it as ``hydra.sweeper``, so every sweep (whatever its launcher) runs it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

from hydra_plugins.ladarun_launcher.planning import job_configs, progress
from ladarun.errors import LadarunError
from ladarun.launchers import (
    drop_tracebacks,
    end_with_process,
    interrupted_lines,
    release_memory,
    use_gpu_of_job,
)


class SweepTask:
    """What every launcher runs for one job of a sweep: ladarun's task under three guards.

    - A job in another process of this machine ends with the sweep's process (SIGTERM, SIGKILL
      or Ctrl-C of it), releasing its run's lock; Slurm's jobs outlive it by design.
    - A failed job's error loses its traceback (the run's frames, and with them the model and
      data, on the GPU too) before the sweep keeps it to the end; GPU memory is given back.
    - Parallel workers on one machine spread their runs over its GPUs (``cuda:{num % count}``).
    """

    def __init__(self, task_function: Any) -> None:
        self.task_function = task_function
        self.sweep_pid = os.getpid()
        self.end_with_sweep = True
        self.spread_gpus = False

    def __call__(self, cfg: DictConfig) -> Any:
        if self.end_with_sweep:
            end_with_process(self.sweep_pid)
        if self.spread_gpus:
            use_gpu_of_job(int(HydraConfig.get().job.num), str(cfg.get("device", "auto")))
        failed = False
        try:
            return self.task_function(cfg)
        except Exception as err:
            failed = True
            drop_tracebacks(err)  # logged with its traceback in the run's ladarun.log already
            raise
        finally:
            release_memory(failed)


class _Collecting(Launcher):
    """The sweep's launcher, keeping failed jobs aside: the basic sweeper raises the first one."""

    def __init__(self, launcher: Launcher, failed: list[JobReturn]) -> None:
        self.launcher, self.failed = launcher, failed

    def setup(self, **kwargs: Any) -> None:
        self.launcher.setup(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        results = self.launcher.launch(job_overrides, initial_job_idx)
        self.failed += [r for r in results if r.status == JobStatus.FAILED]
        return [r for r in results if r.status != JobStatus.FAILED]


class ReportingSweeper(BasicSweeper):
    """Hydra's basic sweeper, ending with one line per failed job instead of a traceback.

    The basic sweeper raises the first failed job's exception, with its traceback, after all
    jobs have run. This one lets every job run the same way, then prints each failed job's run
    folder and message (the traceback of an unexpected error is in that folder's ladarun.log)
    and exits with status 1. Ctrl-C ends with one line per run it stopped, naming the command
    that resumes it. Every job's config is checked before any runs, composed the fast way
    (hydra_plugins/ladarun_launcher/planning.py).
    """

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        task = SweepTask(task_function)
        super().setup(hydra_context=hydra_context, task_function=task, config=config)
        task.end_with_sweep = not getattr(self.launcher, "jobs_outlive_sweep", False)
        task.spread_gpus = getattr(self.launcher, "spreads_gpus", False)
        assert self.launcher is not None
        self.failed: list[JobReturn] = []
        self.launcher = _Collecting(self.launcher, self.failed)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra's check that every job composes, without composing each job whole."""
        assert self.hydra_context is not None and self.config is not None
        configs = job_configs(self.hydra_context.config_loader, self.config)
        for overrides in progress(batch, "composing"):
            configs(overrides)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            returns = super().sweep(arguments)
        except KeyboardInterrupt:
            self._interrupted()
        if not self.failed:
            return returns
        total = len(self.failed) + sum(len(batch) for batch in returns)
        print(f"ladarun: {len(self.failed)} of {total} jobs failed:", file=sys.stderr)
        for job in self.failed:
            err = job._return_value
            where = job.hydra_cfg.hydra.runtime.output_dir if job.hydra_cfg else "?"
            what = err if isinstance(err, LadarunError) else f"{type(err).__name__}: {err}"
            tail = "" if isinstance(err, LadarunError) else " (traceback in its ladarun.log)"
            print(f"  {where}: {what}{tail}", file=sys.stderr)
        print(
            "Fix the cause, then rerun the same command: finished runs are skipped.",
            file=sys.stderr,
        )
        sys.exit(1)

    def _interrupted(self) -> None:
        """One line per run of the interrupted batch left unfinished, then exit 130."""
        assert self.hydra_context is not None and self.config is not None
        batch = self.overrides[max(self.batch_index - 1, 0)] if self.overrides else []
        configs = job_configs(self.hydra_context.config_loader, self.config)
        jobs = [(list(o), configs(o).run_dir) for o in batch]
        hydra_overrides = [
            str(o)
            for o in self.config.hydra.overrides.hydra
            if not str(o).startswith("hydra.mode=")  # what -m says
        ]
        lines = interrupted_lines(jobs, hydra_overrides)
        if lines:
            print(
                f"ladarun: interrupted; {len(lines)} run(s) stopped before finishing, each keeps "
                "every finished iteration; rerun the sweep's command to resume them all, or one:",
                file=sys.stderr,
            )
            print("\n".join(lines), file=sys.stderr, flush=True)
        else:
            print(
                "ladarun: interrupted; no run had finished an iteration yet: rerun the same "
                "command to start them",
                file=sys.stderr,
            )
        sys.exit(130)
