"""``hydra/launcher=slurm`` and ``submitit_local``: hydra-submitit-launcher's launchers with ladarun's
planning (docs/launchers.md).

The plugin's launchers submit every job of a sweep as one array and wait on Slurm's accounting.
These first compose each job's config as the job will, which gives its run directory, then:

- leave out finished runs (a relaunch of a finished sweep submits nothing), runs another process
  is running now, and directories that hold another configuration;
- give each run the resources of its protocol (``resources:`` in conf/hydra/launcher/slurm.yaml)
  and submit one array per set of resources;
- with ``dry_run=true``, list the jobs, their run directories and resources, and submit nothing.

sbatch's refusal is one line naming the key to change; waiting follows the jobs with squeue, so
a missing sacct costs one warning and a job that dies is reported instead of waited on forever.
Inside a job, ``checkpoint`` stops requeueing a run that reaches its time limit twice at the same
iteration. The decisions that need neither Hydra nor Slurm are in ladarun.launchers.
"""

import contextlib
import copy
import io
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict, read_write

from ladarun.errors import LadarunError
from ladarun.launchers import (
    ACTIVE_STATES,
    END_GRACE_S,
    HOPELESS_REASONS,
    JobLostError,
    PlannedJob,
    describe,
    exit_with,
    iterations_done,
    lost_job_error,
    note_time_limit,
    run_resources,
    sacct_available,
    sbatch_refusal,
    squeue_states,
    timed_out,
)

try:  # Hydra imports every hydra_plugins module; without the [slurm] extra there is nothing here.
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf
except ImportError:  # pragma: no cover - the extra is part of the dev install
    submitit_launcher = None

log = logging.getLogger(__name__)

if submitit_launcher is not None:

    @dataclass
    class LocalConf(LocalQueueConf):
        """The plugin's schema for ``submitit_local`` with ladarun's launcher and ``dry_run``.

        conf/hydra/launcher/submitit_local.yaml shares this name, so Hydra checks it against
        this schema; stored after the plugin's own, it replaces it.
        """

        _target_: str = "hydra_plugins.ladarun_launcher.ladarun_submitit.LocalLauncher"
        dry_run: bool = False

    ConfigStore.instance().store(
        group="hydra/launcher", name="submitit_local", node=LocalConf, provider="ladarun"
    )

    class _LadarunSubmitit(submitit_launcher.BaseSubmititLauncher):
        """hydra-submitit-launcher's launcher with ladarun's planning and dry run (see the module)."""

        def __init__(self, **params: Any) -> None:
            self.dry_run = bool(params.pop("dry_run", False))
            table = params.pop("resources", None)
            if OmegaConf.is_config(table):
                table = OmegaConf.to_container(table, resolve=True)
            self.resource_table: dict[str, Any] = dict(table or {})
            super().__init__(**params)
            self._run_dirs: dict[int, str] = {}
            self._timeout_mins: dict[int, float] = {}
            # Inside a job: the run, when it started and the iteration it stood at each time limit.
            self._job_num: Optional[int] = None
            self._started = 0.0
            self._at_time_limit: list[int] = []

        # -- before submitting ----------------------------------------------------------------------
        def plan(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> list[PlannedJob]:
            """Compose every job's config as the job will, and decide what to do with it."""
            assert self.hydra_context is not None and self.config is not None
            before = HydraConfig.instance().cfg
            try:
                return [
                    self._plan_one(initial_job_idx + i, list(overrides))
                    for i, overrides in enumerate(job_overrides)
                ]
            finally:
                HydraConfig.instance().cfg = before

        def _plan_one(self, idx: int, overrides: list[str]) -> PlannedJob:
            from ladarun.report.runs import default_config
            from ladarun.rundir.identity import check_existing  # no torch
            from ladarun.rundir.lock import running_owner

            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num = idx
                cfg.hydra.job.id = f"job_id_for_{idx}"
            # Resolving ${hydra:...} in the run directory or the config reads HydraConfig.
            HydraConfig.instance().set_config(cfg)
            run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            # As run_job sets it: the sweep's summary of failed jobs names it.
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)
            task = copy.deepcopy(cfg)
            with read_write(task), open_dict(task):
                del task["hydra"]
            resources = run_resources(self.params, self.resource_table, str(task.protocol.name))
            job = PlannedJob(idx, overrides, run_dir, resources, "new", config=cfg)
            try:
                owner = running_owner(run_dir)
                if owner is not None:
                    job.status, job.note = "running", f"running now ({owner})"
                    job.error = LadarunError(
                        f"{run_dir} is being run right now by {owner}; not submitted again"
                    )
                    return job
                config = cast(dict[str, Any], OmegaConf.to_container(task, resolve=True))
                job.best = check_existing(run_dir, config, lambda: default_config(config))
            except LadarunError as err:
                job.status, job.note, job.error = "refused", str(err), err
                return job
            if job.best is not None:
                job.status, job.note = "finished", f"finished (best {job.best:.2f}%)"
            elif iterations_done(run_dir) >= 0:
                job.status, job.note = (
                    "resume",
                    f"resumes after iteration {iterations_done(run_dir)}",
                )
            return job

        def listing(self, jobs: list[PlannedJob]) -> str:
            """The dry run's table: every job, its run directory, what happens to it, its resources."""
            rows = [
                (
                    f"#{j.idx}",
                    j.label or "(no overrides)",
                    str(j.run_dir),
                    j.note or j.status,
                    describe(j.resources) if j.to_submit else "-",
                )
                for j in jobs
            ]
            widths = [max(len(r[c]) for r in rows) for c in range(4)]
            lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
            n = sum(j.to_submit for j in jobs)
            groups = len({tuple(sorted(j.resources.items())) for j in jobs if j.to_submit})
            head = (
                f"dry run ({type(self).__name__}): {len(jobs)} job(s), {n} would be submitted"
                f" as {groups} array(s); nothing was submitted"
            )
            return "\n".join([head, *lines])

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            assert self.config is not None
            jobs = self.plan(job_overrides, initial_job_idx)
            if self.dry_run:
                print(self.listing(jobs), flush=True)
                return [self._not_submitted(j, dry_run=True) for j in jobs]
            todo = [j for j in jobs if j.to_submit]
            for j in jobs:
                if not j.to_submit:
                    log.info("\t#%d : %s: %s; not submitted", j.idx, j.label, j.note)
            if not todo:
                log.info(
                    "Nothing to submit: %d run(s) finished, %d left out (see above).",
                    sum(j.status == "finished" for j in jobs),
                    sum(j.status in ("running", "refused") for j in jobs),
                )
                return [self._not_submitted(j) for j in jobs]
            log.info(
                "Submitting %d of %d run(s) (%d finished, %d left out).",
                len(todo),
                len(jobs),
                sum(j.status == "finished" for j in jobs),
                sum(j.status in ("running", "refused") for j in jobs),
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            for j in todo:
                self._run_dirs[j.idx] = str(j.run_dir)
                self._timeout_mins[j.idx] = float(j.resources.get("timeout_min") or 60)
            groups: dict[tuple, list[PlannedJob]] = {}
            for j in todo:
                groups.setdefault(tuple(sorted(j.resources.items(), key=str)), []).append(j)
            submitted: list[tuple[PlannedJob, Any]] = []
            for group in groups.values():
                submitted += zip(group, self._submit(group, [job for _, job in submitted]))
            returns = {j.idx: self._not_submitted(j) for j in jobs if not j.to_submit}
            returns.update(self._wait(submitted))
            return [returns[j.idx] for j in jobs]

        def _executor(self, resources: dict[str, Any]) -> Any:
            import submitit

            init = {"folder": self.params["submitit_folder"]}
            if "max_num_timeout" in self.params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            params = {**self.params, **resources}
            if self._EXECUTOR == "slurm" and not params.get("gpus_per_node"):
                params["gpus_per_node"] = None  # no GPU: no gres request at all (CPU-only clusters)
            executor.update_parameters(
                **{
                    k if k in base else f"{self._EXECUTOR}_{k}": v
                    for k, v in params.items()
                    if k not in ("submitit_folder", "max_num_timeout") and v is not None
                }
            )
            return executor

        def _submit(self, group: list[PlannedJob], before: list[Any]) -> list[Any]:
            """Submit ``group`` (one array, one set of resources); sbatch's refusal is one line.

            ``before`` are the jobs of the sweep's arrays submitted already: they run on."""
            from submitit.core.utils import FailedJobError

            executor = self._executor(group[0].resources)
            args = [
                (
                    j.overrides,
                    "hydra.sweep.dir",
                    j.idx,
                    f"job_id_for_{j.idx}",
                    Singleton.get_state(),
                )
                for j in group
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
            first = jobs[0].job_id.split("_")[0]
            log.info(
                "Submitted job %s: %d run(s), %s; logs in %s",
                first,
                len(group),
                describe(group[0].resources),
                jobs[0].paths.folder.parent,
            )
            return jobs

        def _wait(self, submitted: list[tuple[PlannedJob, Any]]) -> dict[int, JobReturn]:
            """Every job's JobReturn, as submitit's jobs give them."""
            return {j.idx: self._collect(j, job) for j, job in submitted}

        def _collect(self, planned: PlannedJob, job: Any) -> JobReturn:
            """The JobReturn of a job whose result file exists; submitit's own errors in one line."""
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
                        f"job {job.job_id} ({planned.label}) failed outside the run: {said.strip()}; "
                        f"log: {job.paths.stderr}"
                    ),
                )

        def _not_submitted(self, job: PlannedJob, dry_run: bool = False) -> JobReturn:
            ret = self._job_return(job)
            if job.error is not None and not dry_run:
                ret.status, ret.return_value = JobStatus.FAILED, job.error
            else:
                ret.status, ret.return_value = JobStatus.COMPLETED, job.best
            return ret

        def _failed(self, job: PlannedJob, error: LadarunError) -> JobReturn:
            ret = self._job_return(job)
            ret.status, ret.return_value = JobStatus.FAILED, error
            return ret

        def _job_return(self, job: PlannedJob) -> JobReturn:
            assert job.config is not None
            task = copy.deepcopy(job.config)
            with read_write(task), open_dict(task):
                del task["hydra"]
            return JobReturn(
                overrides=job.overrides,
                cfg=task,
                hydra_cfg=job.config,
                working_dir=os.getcwd(),
                task_name=str(job.config.hydra.job.name),
            )

        # -- inside a job ---------------------------------------------------------------------------
        def __call__(
            self,
            sweep_overrides: list[str],
            job_dir_key: str,
            job_num: int,
            job_id: str,
            singleton_state: dict[type, Singleton],
        ) -> JobReturn:
            self._job_num, self._started = job_num, time.time()
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

        def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            """Requeue the job on preemption or at its time limit, unless the time limit came twice
            at the same iteration: one iteration does not fit in the limit, and requeueing again
            would repeat the same attempt forever."""
            if self._job_num is not None and self._job_num in self._run_dirs:
                run_dir = Path(self._run_dirs[self._job_num])
                limit = self._timeout_mins[self._job_num]
                if timed_out(self._started, limit):
                    note_time_limit(self._at_time_limit, iterations_done(run_dir), limit)
            return super().checkpoint(*args, **kwargs)

    class LocalLauncher(_LadarunSubmitit):
        """submitit's local executor (``hydra/launcher=submitit_local``), planned as the Slurm one."""

        _EXECUTOR = "local"

    class SlurmLauncher(_LadarunSubmitit):
        """One sbatch array per set of resources (``hydra/launcher=slurm``)."""

        _EXECUTOR = "slurm"

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
            """Wait for every job with squeue; a job gone without a result is a one-line failure."""
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
                if not pending:
                    break
                queue = squeue_states(arrays)
                now = time.time()
                for jid, (planned, job) in list(pending.items()):
                    state, reason = queue.get(jid, ("", "")) if queue is not None else ("?", "")
                    if state == "?" or state in ACTIVE_STATES:
                        ended_since.pop(jid, None)
                        key = (jid.split("_")[0], reason)
                        if state == "PENDING" and reason in HOPELESS_REASONS and key not in warned:
                            warned.add(key)
                            log.warning(
                                "Job %s pends with reason %s: its partition cannot run a job asking "
                                "for %s. Lower hydra.launcher.cpus_per_task / mem_gb / timeout_min or "
                                "choose another hydra.launcher.partition (`sinfo -o '%%P %%c %%m %%l'`), "
                                "then `scancel %s` and relaunch.",
                                key[0],
                                reason,
                                describe(planned.resources),
                                key[0],
                            )
                        continue
                    if now - ended_since.setdefault(jid, now) >= END_GRACE_S:
                        out[planned.idx] = self._failed(
                            planned, lost_job_error(planned, job, state, accounting is True)
                        )
                        del pending[jid]
                time.sleep(min(30.0, 2.0 + (time.time() - start) / 10))
            failed = sum(r.status == JobStatus.FAILED for r in out.values())
            log.info(
                "All %d job(s) ended: %d finished, %d failed.", len(out), len(out) - failed, failed
            )
            return out
