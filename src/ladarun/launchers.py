"""What ladarun's submitit launchers decide, without Hydra: resources, sbatch's refusals, job states.

The launchers themselves (``hydra/launcher=slurm`` and ``submitit_local``) are Hydra plugins, so
they live in hydra_plugins/ladarun_launcher/ (Hydra accepts launchers only from that package);
everything they decide that can be tested without Hydra or Slurm is here:

- which resources a run asks for (its protocol's entry of ``resources:`` in
  conf/hydra/launcher/slurm.yaml, so the CPU protocols ask for no GPU);
- what happens to each job of a sweep before submission (PlannedJob: new, resume, finished...);
- sbatch's refusal as one line naming the launcher key that fixes it;
- job states from ``squeue``, so waiting needs no Slurm accounting (sacct);
- the time-limit rule: a run that reaches its limit twice at the same iteration stops requeueing.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from .errors import LadarunError

# The keys of a run's resources, as hydra.launcher spells them. ``resources.<protocol>`` sets
# them per protocol; a value set at the top of hydra.launcher (not null) wins for every run.
RESOURCE_KEYS = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
# squeue states of a job that may still produce a result (a requeued job passes through them).
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
# Pending reasons that do not go away by waiting: the partition cannot hold the job as asked.
HOPELESS_REASONS = frozenset(
    {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints"}
)
# How long a job may look ended (or be missing from squeue) before its missing result counts:
# the result file can lag on a shared file system, and a requeue passes through ended states.
END_GRACE_S = 30.0


class SubmissionError(LadarunError):
    """sbatch refused a job, or Slurm is not there to take one."""


class JobLostError(LadarunError):
    """A job ended without leaving a result (killed, out of memory, node failure...)."""


class TimeLimitError(LadarunError):
    """A run reached its time limit twice without finishing an iteration in between."""


@dataclass
class PlannedJob:
    """One job of a sweep, composed as the job will compose it, before anything is submitted."""

    idx: int
    overrides: list[str]
    run_dir: Path
    resources: dict[str, Any]
    status: str  # "new", "resume", "finished", "running", "refused"
    note: str = ""
    config: Any = field(default=None, repr=False)  # the job's DictConfig, hydra node included
    error: Optional[LadarunError] = field(default=None, repr=False)
    best: Optional[float] = None

    @property
    def to_submit(self) -> bool:
        return self.status in ("new", "resume")

    @property
    def label(self) -> str:
        # Hydra's own overrides (hydra.launcher.*, ...) are the same for every job.
        return " ".join(o for o in self.overrides if not o.startswith("hydra."))


# --- resources ----------------------------------------------------------------------------------
def run_resources(params: dict[str, Any], table: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The resources of one run: its protocol's entry of ``table`` (else ``default``), with every
    key that ``params`` (the launcher's top level) sets to a value winning over it."""
    entry = table.get(protocol, table.get("default", {})) or {}
    out = {k: entry.get(k) for k in RESOURCE_KEYS}
    out.update({k: params[k] for k in RESOURCE_KEYS if params.get(k) is not None})
    return out


def describe(resources: dict[str, Any]) -> str:
    """``cpus=1 gpus=0 mem=2GB time=30min partition=debug`` for a listing or a message."""
    parts = [
        f"cpus={resources.get('cpus_per_task') or 1}",
        f"gpus={resources.get('gpus_per_node') or 0}",
        f"mem={resources['mem_gb']}GB" if resources.get("mem_gb") else "mem=default",
        f"time={resources.get('timeout_min')}min",
    ]
    if resources.get("partition"):
        parts.append(f"partition={resources['partition']}")
    return " ".join(parts)


# --- sbatch's refusals --------------------------------------------------------------------------
# (what sbatch says, lower case) -> the launcher setting that fixes it.
_SBATCH_FIXES = (
    (
        "generic resource",
        "this partition has no GPUs to give: set hydra.launcher.gpus_per_node=0 for a CPU run, "
        "or hydra.launcher.partition=<a GPU partition>",
    ),
    ("invalid partition", "set hydra.launcher.partition to one of `sinfo -h -o %P`"),
    (
        "node configuration is not available",
        "no node offers that much: lower hydra.launcher.cpus_per_task / mem_gb / gpus_per_node, "
        "or choose another hydra.launcher.partition (`sinfo -o '%P %c %m %G'` lists what nodes have)",
    ),
    ("memory", "lower hydra.launcher.mem_gb or choose another hydra.launcher.partition"),
    (
        "time limit",
        "lower hydra.launcher.timeout_min to the partition's limit (`sinfo -o '%P %l'`); a run that "
        "needs longer is requeued and resumes",
    ),
    ("account", "set hydra.launcher.account to one of yours (`sacctmgr show assoc user=$USER`)"),
    ("qos", "set hydra.launcher.qos to one your account may use"),
)


def sbatch_refusal(stderr: str, n_jobs: int, resources: dict[str, Any]) -> str:
    """One line from sbatch's error output: what it said and the launcher key that fixes it."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
    said = said.removeprefix("sbatch: error: ").removeprefix("sbatch: ")
    fix = next(
        (fix for key, fix in _SBATCH_FIXES if key in said.lower()),
        "change the hydra.launcher.* setting it names, or add hydra.launcher.dry_run=true to "
        "review the jobs",
    )
    return f"sbatch refused {n_jobs} run(s) asking for {describe(resources)}: {said}; {fix}"


# --- a run directory, read without importing torch ------------------------------------------
def iterations_done(run_dir: Path) -> int:
    """The last iteration metrics.csv records (-1 before the initial training has finished)."""
    from .rundir.files import METRICS

    try:
        with open(run_dir / METRICS, newline="") as f:
            its = [
                int(r["iteration"]) for r in csv.DictReader(f) if r.get("iteration", "").isdigit()
            ]
    except (OSError, KeyError):
        return -1
    return max(its, default=-1)


def timed_out(started: float, timeout_min: float, now: Optional[float] = None) -> bool:
    """Whether a signal at ``now`` means the time limit, by submitit's own rule (SignalHandler):
    a job that has run min(80 % of its limit, its limit - 10 min) has timed out; earlier, it
    was preempted."""
    limit_s = float(timeout_min) * 60.0
    return ((now or time.time()) - started) >= min(0.8 * limit_s, limit_s - 600.0)


def note_time_limit(at_limit: list[int], done: int, timeout_min: float) -> None:
    """Record in ``at_limit`` that a run reached its time limit with ``done`` iterations
    finished; raise TimeLimitError when the time limit before found it at the same iteration.

    An allocation that ends without one new iteration would end the same way every time it is
    requeued: one iteration does not fit in ``timeout_min``. (The first allocation may also
    spend its time loading data, so one such allocation is not proof; two in a row are.)
    """
    if at_limit and at_limit[-1] == done:
        where = f"at iteration {done}" if done >= 0 else "before its initial training finished"
        raise TimeLimitError(
            f"the run reached its time limit of {timeout_min:g} min twice {where}: one "
            "iteration takes longer than that; relaunch with a larger hydra.launcher.timeout_min "
            "(the run resumes from its checkpoint)"
        )
    at_limit.append(done)


def lost_job_error(planned: PlannedJob, job: Any, state: str, accounting: bool) -> JobLostError:
    """One line for a job that ended without a result: its Slurm state, its run's own failure
    (failed.json) when it wrote one, and where its log is."""
    from .rundir.files import FAILURE

    if not state and accounting:
        state = sacct_state(job.job_id)
    what = f"ended ({state})" if state else "left the queue"
    failure = planned.run_dir / FAILURE
    reason = ""
    if failure.exists():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            reason = f": {json.loads(failure.read_text()).get('message', '')}"
    return JobLostError(
        f"job {job.job_id} ({planned.label}) {what} without a result{reason}; "
        "its run folder keeps every finished iteration (relaunch the sweep to resume it); "
        f"log: {job.paths.stderr}"
    )


def squeue_states(arrays: Sequence[str]) -> Optional[dict[str, tuple[str, str]]]:
    """{job id ("123_4" for an array task): (state, reason)} from squeue, or None if it failed.

    A job Slurm has forgotten (MinJobAge after it ended) is simply missing from the answer.
    """
    cmd = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(arrays)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        # Every job asked about is forgotten: squeue refuses the ids instead of listing nothing.
        return {} if "invalid job id" in res.stderr.lower() else None
    states = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def sacct_available(job_id: str) -> bool | str:
    """True when sacct answers for ``job_id``, else why not (for the warning)."""
    if shutil.which("sacct") is None:
        return "no sacct command"
    res = subprocess.run(
        ["sacct", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True
    )
    if res.returncode != 0:
        return (res.stderr.strip().splitlines() or ["sacct failed"])[-1]
    return True


def sacct_state(job_id: str) -> str:
    res = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True
    )
    lines = res.stdout.split()
    return lines[-1] if res.returncode == 0 and lines else ""


def exit_with(message: str) -> NoReturn:
    """Stop ladarun with one line: the launcher runs outside the CLI's own error handling."""
    print(f"ladarun: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
