"""``hydra/launcher=slurm`` and ``submitit_local``: hydra-submitit-launcher's launchers, planned first
(docs/launchers.md).

The plugin's BaseSubmititLauncher gives the job itself: in the job, ``__call__`` composes its
config and runs it, and ``checkpoint`` resubmits it unchanged on preemption or at the time limit
(a requeued run lands in the same run directory and resumes from its checkpoint, as DINO's
run_with_submitit.py does). What the plugin's ``launch`` lacks, these add before submitting:
every job planned (planning.py: finished runs left out, each run's resources from its protocol,
``dry_run`` lists them), one array per set of resources, sbatch's refusal as one line, waiting
with squeue (the plugin's submitit waits on sacct, forever where accounting is off), and the
time-limit rule. The decisions that need neither Hydra nor Slurm are in ladarun.launchers.
"""

import contextlib
import io
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.ladarun_launcher.planning import Planning
from ladarun.errors import LadarunError
from ladarun.launchers import (
    ACTIVE_STATES,
    END_GRACE_S,
    HOPELESS_REASONS,
    JobLostError,
    PlannedJob,
    describe,
    executor_parameters,
    exit_with,
    iterations_done,
    listing,
    lost_job_error,
    note_time_limit,
    sacct_available,
    sbatch_refusal,
    squeue_states,
    timed_out,
)

try:  # Hydra imports every hydra_plugins module; without the [slurm] extra there is nothing here.
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
except ImportError:  # pragma: no cover - the extra is part of the dev install
    BaseSubmititLauncher = None

log = logging.getLogger(__name__)

if BaseSubmititLauncher is not None:

    @dataclass
    class LocalConf(LocalQueueConf):
        """The plugin's ``submitit_local`` schema with ladarun's launcher and ``dry_run``; stored
        after the plugin's own under its name, so conf/hydra/launcher/submitit_local.yaml is
        checked against it."""

        _target_: str = "hydra_plugins.ladarun_launcher.ladarun_submitit.LocalLauncher"
        dry_run: bool = False

    ConfigStore.instance().store(
        group="hydra/launcher", name="submitit_local", node=LocalConf, provider="ladarun"
    )

    class _Planned(Planning, BaseSubmititLauncher):
        """hydra-submitit-launcher's launcher, each job planned first (see the module)."""

        def __init__(self, **params: Any) -> None:
            self.dry_run = bool(params.pop("dry_run", False))
            self.verbs = ("Would submit", "submit") if self.dry_run else ("Submitting", "submit")
            super().__init__(**params)
            self.resource_table = dict(self.params.pop("resources", None) or {})
            # Read inside a job (pickled with it): its run and time limit, when it started,
            # and the iteration it stood at each time limit.
            self.run_dirs: dict[int, tuple[str, float]] = {}
            self.job_num: Optional[int] = None
            self.started = 0.0
            self.at_time_limit: list[int] = []

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            assert self.config is not None
            jobs = self.plan(job_overrides, initial_job_idx)
            if self.dry_run:
                print(listing(jobs, type(self).__name__), flush=True)
                return self.returns(jobs, {}, dry_run=True)
            todo = [j for j in jobs if j.to_run]
            if not todo:
                return self.returns(jobs, {})
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            self.run_dirs = {
                j.idx: (str(j.run_dir), float(j.resources.get("timeout_min") or 60)) for j in todo
            }
            groups: dict[tuple, list[PlannedJob]] = {}
            for j in todo:
                groups.setdefault(tuple(sorted(j.resources.items(), key=str)), []).append(j)
            submitted: list[tuple[PlannedJob, Any]] = []
            for group in groups.values():
                submitted += zip(group, self._submit(group, [job for _, job in submitted]))
            return self.returns(jobs, self._wait(submitted))

        def _executor(self, resources: dict[str, Any]) -> Any:
            import submitit

            kind = self._EXECUTOR
            folder = self.params["submitit_folder"]
            timeouts = int(self.params.get("max_num_timeout", 3))  # submitit's own default
            params = executor_parameters(kind, self.params, resources)
            if kind == "local":  # AutoExecutor would refuse visible_gpus, LocalExecutor's own key
                executor: Any = submitit.LocalExecutor(folder, max_num_timeout=timeouts)
                executor.update_parameters(**params)
                return executor
            shared = set(BaseQueueConf.__dataclass_fields__)
            executor = submitit.AutoExecutor(
                folder, cluster=kind, **{f"{kind}_max_num_timeout": timeouts}
            )
            executor.update_parameters(
                **{k if k in shared else f"{kind}_{k}": v for k, v in params.items()}
            )
            return executor

        def _submit(self, group: list[PlannedJob], before: list[Any]) -> list[Any]:
            """Submit ``group`` (one array, one set of resources); sbatch's refusal is one line.

            ``before`` are the jobs of the sweep's arrays submitted already: they run on."""
            from submitit.core.utils import FailedJobError

            executor = self._executor(group[0].resources)
            state = Singleton.get_state()
            args = [
                (j.overrides, "hydra.sweep.dir", j.idx, f"job_id_for_{j.idx}", state) for j in group
            ]
            stderr = io.StringIO()
            try:
                # submitit prints sbatch's stderr before raising it again in a long FailedJobError.
                with contextlib.redirect_stderr(stderr):
                    jobs = executor.map_array(self, *zip(*args))
            except FailedJobError as err:
                message = sbatch_refusal(
                    str(err) or stderr.getvalue(), len(group), group[0].resources
                )
                arrays = sorted({job.job_id.split("_")[0] for job in before})
                if arrays:
                    message += (
                        f" (job {', '.join(arrays)} of this sweep was submitted and runs on; the "
                        "relaunch leaves its finished runs out)"
                    )
                exit_with(message)
            log.info(
                "Submitted job %s: %d run(s), %s; logs in %s",
                jobs[0].job_id.split("_")[0],
                len(group),
                describe(group[0].resources),
                jobs[0].paths.folder.parent,
            )
            return jobs

        def _wait(self, submitted: list[tuple[PlannedJob, Any]]) -> dict[int, JobReturn]:
            """Every job's JobReturn, as submitit's jobs give them (local processes end)."""
            return {j.idx: self._collect(j, job) for j, job in submitted}

        def _collect(self, planned: PlannedJob, job: Any) -> JobReturn:
            """The JobReturn of a job that ended; submitit's own errors in one line."""
            from submitit.core.utils import FailedJobError, UncompletedJobError

            try:
                return job.results()[0]
            except (FailedJobError, UncompletedJobError) as err:
                # The job's trace ends with the exception's own line.
                last = [ln for ln in str(err).splitlines() if ln.strip() and not ln.startswith("-")]
                said = next(
                    (ln for ln in reversed(last) if "Error" in ln), last[-1] if last else ""
                )
                return self._failed(
                    planned,
                    JobLostError(
                        f"job {job.job_id} ({planned.label}) failed outside the run: "
                        f"{said.strip()}; log: {job.paths.stderr}"
                    ),
                )

        def _failed(self, planned: PlannedJob, error: LadarunError) -> JobReturn:
            planned.error = error
            return self.returns([planned], {})[0]

        # -- inside a job ---------------------------------------------------------------------
        def __call__(
            self, sweep_overrides: list[str], job_dir_key: str, job_num: int, *args: Any
        ) -> Any:
            self.job_num, self.started = job_num, time.time()
            return super().__call__(sweep_overrides, job_dir_key, job_num, *args)

        def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            """Requeue the job (submitit resubmits it as it was) unless the time limit came twice
            at the same iteration: one iteration does not fit in the limit, and requeueing again
            would repeat the same attempt forever."""
            if self.job_num in self.run_dirs:
                run_dir, limit = self.run_dirs[self.job_num]
                if timed_out(self.started, limit):
                    note_time_limit(self.at_time_limit, iterations_done(Path(run_dir)), limit)
            return super().checkpoint(*args, **kwargs)

    class LocalLauncher(_Planned):
        """submitit's local executor (``hydra/launcher=submitit_local``), planned as the Slurm one."""

        _EXECUTOR = "local"

        def _submit(self, group: list[PlannedJob], before: list[Any]) -> list[Any]:
            """Jobs that leave Ctrl-C to the sweep: it reports them, and they end with it
            (SweepTask); submitit's controllers would each print a traceback instead."""
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the processes
            try:
                return super()._submit(group, before)
            finally:
                signal.signal(signal.SIGINT, previous)

    class SlurmLauncher(_Planned):
        """One sbatch array per set of resources (``hydra/launcher=slurm``)."""

        _EXECUTOR = "slurm"
        jobs_outlive_sweep = True  # the jobs are Slurm's: they run on if this process ends

        def _executor(self, resources: dict[str, Any]) -> Any:
            missing = [c for c in ("sbatch", "squeue", "srun") if shutil.which(c) is None]
            if missing:
                exit_with(
                    f"hydra/launcher=slurm needs Slurm's commands, and {', '.join(missing)} is not on "
                    "PATH here: run from a Slurm login node, try hydra/launcher=submitit_local, or add "
                    "hydra.launcher.dry_run=true to list the jobs"
                )
            return super()._executor(resources)

        def _wait(self, submitted: list[tuple[PlannedJob, Any]]) -> dict[int, JobReturn]:
            """Wait with squeue (no accounting needed); Ctrl-C leaves the jobs running."""
            try:
                return self._follow(submitted)
            except KeyboardInterrupt:
                arrays = " ".join(sorted({job.job_id.split("_")[0] for _, job in submitted}))
                print(
                    f"ladarun: stopped waiting; the jobs run on in Slurm (squeue -j {arrays}; "
                    f"scancel {arrays} stops them); once they end, rerun the same command: "
                    "finished runs are skipped and the others resume",
                    file=sys.stderr,
                )
                sys.exit(130)

        def _follow(self, submitted: list[tuple[PlannedJob, Any]]) -> dict[int, JobReturn]:
            """Every job's JobReturn; a job gone without a result is a one-line failure."""
            pending = {job.job_id: (planned, job) for planned, job in submitted}
            arrays = sorted({jid.split("_")[0] for jid in pending})
            accounting = sacct_available(arrays[0])
            if accounting is not True:
                log.warning(
                    "Slurm accounting (sacct) is not available here (%s): ladarun follows the jobs "
                    "with squeue, and a job that ends without a result is reported from its log.",
                    accounting,
                )
            out: dict[int, JobReturn] = {}
            ended_since: dict[str, float] = {}
            warned: set[tuple[str, str]] = set()
            start = time.time()
            while pending:
                for jid, (planned, job) in list(pending.items()):
                    if job.paths.result_pickle.exists():
                        out[planned.idx] = self._collect(planned, job)
                        del pending[jid]
                queue = squeue_states(arrays) if pending else {}
                now = time.time()
                for jid, (planned, job) in list(pending.items()):
                    state, reason = queue.get(jid, ("", "")) if queue is not None else ("?", "")
                    if state == "?" or state in ACTIVE_STATES:
                        ended_since.pop(jid, None)
                        if state == "PENDING" and reason in HOPELESS_REASONS:
                            self._warn_hopeless(planned, jid, reason, warned)
                        continue
                    if now - ended_since.setdefault(jid, now) >= END_GRACE_S:
                        lost = lost_job_error(planned, job, state, accounting is True)
                        out[planned.idx] = self._failed(planned, lost)
                        del pending[jid]
                if pending:
                    time.sleep(min(30.0, 2.0 + (time.time() - start) / 10))
            failed = sum(r.status == JobStatus.FAILED for r in out.values())
            log.info(
                "All %d job(s) ended: %d finished, %d failed.", len(out), len(out) - failed, failed
            )
            return out

        @staticmethod
        def _warn_hopeless(planned: PlannedJob, jid: str, reason: str, warned: set) -> None:
            """Once per array: its jobs pend for a reason waiting does not remove."""
            key = (jid.split("_")[0], reason)
            if key in warned:
                return
            warned.add(key)
            log.warning(
                "Job %s pends with reason %s: its partition cannot run a job asking for %s. Lower "
                "hydra.launcher.cpus_per_task / mem_gb / timeout_min or choose another "
                "hydra.launcher.partition (`sinfo -o '%%P %%c %%m %%l'`), then `scancel %s` and "
                "relaunch.",
                key[0],
                reason,
                describe(planned.resources),
                key[0],
            )
