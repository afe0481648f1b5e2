"""``hydra/launcher=local``: hydra-joblib-launcher's parallel workers, planned first.

Before any worker starts, every job is planned (planning.py): a finished run is left out instead
of being sent to a worker that composes its config only to skip it, a run another process holds
now is left out, and a folder of another configuration is refused; the rest go to the plugin's
JoblibLauncher unchanged. Its workers spread their runs over the visible GPUs and end with the
sweep's process (the sweeper's SweepTask).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from hydra.core.utils import JobReturn

from hydra_plugins.ladarun_launcher.planning import Planning

try:  # Hydra imports every hydra_plugins module; without the [parallel] extra there is nothing here.
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
except ImportError:  # pragma: no cover - the extra is part of the dev install
    JoblibLauncher = None

_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"

if JoblibLauncher is not None:

    class LocalLauncher(Planning, JoblibLauncher):
        """joblib's workers for the runs that are left to do (``hydra/launcher=local``)."""

        spreads_gpus = True
        params: dict[str, Any] = {}

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            jobs = self.plan(job_overrides, initial_job_idx)
            todo = [j for j in jobs if j.to_run]
            if not todo:
                return self.returns(jobs, {})
            # After Ctrl-C, loky's resource tracker frees the workers' semaphores and warns that
            # it did, in two lines of its own (it is a process that inherits this variable).
            warnings = [w for w in [os.environ.get("PYTHONWARNINGS")] if w]
            os.environ["PYTHONWARNINGS"] = ",".join([*warnings, _QUIET_TRACKER])
            # The plugin numbers the jobs it is given from initial_job_idx (hydra.job.num).
            ran = super().launch([j.overrides for j in todo], initial_job_idx)
            return self.returns(jobs, {j.idx: r for j, r in zip(todo, ran)})
