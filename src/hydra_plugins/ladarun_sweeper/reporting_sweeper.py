"""Hydra's basic sweeper with a summary of the failed jobs instead of the first one's traceback.

It lives here because Hydra instantiates plugins only from the ``hydra_plugins`` package;
conf/config.yaml selects it as ``hydra.sweeper``.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from ladarun.errors import LadarunError


class ReportingSweeper(BasicSweeper):
    """Hydra's basic sweeper, ending with one line per failed job instead of a traceback.

    The basic sweeper raises the first failed job's exception, with its traceback, after all
    jobs have run. This one lets every job run the same way, then prints each failed job's run
    folder and message (the traceback of an unexpected error is in that folder's ladarun.log)
    and exits with status 1. It is conf/config.yaml's hydra.sweeper; the launchers are unchanged.
    """

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.failed: list[JobReturn] = []
        assert self.launcher is not None
        launch = self.launcher.launch

        def launch_and_collect(
            job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            results = launch(job_overrides, initial_job_idx)
            self.failed += [r for r in results if r.status == JobStatus.FAILED]
            return [r for r in results if r.status != JobStatus.FAILED]

        self.launcher.launch = launch_and_collect  # type: ignore[method-assign]

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        if not self.failed:
            return returns
        total = len(self.failed) + sum(len(batch) for batch in returns)
        print(f"ladarun: {len(self.failed)} of {total} jobs failed:", file=sys.stderr)
        for job in self.failed:
            err = job._return_value
            where = job.hydra_cfg.hydra.runtime.output_dir if job.hydra_cfg else "?"
            if isinstance(err, LadarunError):
                print(f"  {where}: {err}", file=sys.stderr)
            else:
                print(
                    f"  {where}: {type(err).__name__}: {err} (traceback in its ladarun.log)",
                    file=sys.stderr,
                )
        print(
            "Fix the cause, then rerun the same command: finished runs are skipped.",
            file=sys.stderr,
        )
        sys.exit(1)
