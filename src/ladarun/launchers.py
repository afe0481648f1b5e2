"""What ladarun's launchers decide, without Hydra: job plans, resources, Slurm's answers, job guards.

The launchers (``hydra/launcher=slurm``, ``submitit_local`` and ``local``) and the sweeper are Hydra
plugins, so they live in hydra_plugins/ (Hydra accepts plugins only from that package); what they
decide that can be tested without Hydra or Slurm is here:

- what happens to each job of a sweep before anything runs (PlannedJob: new, resume, finished...);
- which resources a run asks for (its protocol's entry of ``resources:`` in
  conf/hydra/launcher/slurm.yaml), and what a job without a GPU may see;
- sbatch's refusal as one line naming the launcher key that fixes it; job states from ``squeue``,
  so waiting needs no Slurm accounting (sacct); the time-limit rule;
- the guards every job of a sweep runs under: it ends with the sweep's process, a failed job lets
  go of its memory, and parallel workers spread over the visible GPUs.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional, Sequence

from .errors import LadarunError

# The keys of a run's resources, as hydra.launcher spells them. ``resources.<protocol>`` sets
# them per protocol; a value set at the top of hydra.launcher (not null) wins for every run.
RESOURCE_KEYS = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
# squeue states of a job that may still produce a result (a requeued job passes through them).
ACTIVE_STATES = frozenset(
    "PENDING RUNNING CONFIGURING COMPLETING REQUEUED REQUEUE_FED REQUEUE_HOLD RESIZING "
    "SUSPENDED SIGNALING STAGE_OUT STOPPED RESV_DEL_HOLD".split()
)
# Pending reasons that do not go away by waiting: the partition cannot hold the job as asked.
HOPELESS_REASONS = frozenset(
    {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints"}
)
# How long a job may look ended (or be missing from squeue) before its missing result counts:
# the result file can lag on a shared file system, and a requeue passes through ended states.
END_GRACE_S = 30.0


class JobLostError(LadarunError):
    """A job ended without leaving a result (killed, out of memory, node failure...)."""


class TimeLimitError(LadarunError):
    """A run reached its time limit twice without finishing an iteration in between."""


# --- the plan ---------------------------------------------------------------------------------
@dataclass
class PlannedJob:
    """One job of a sweep, composed as the job will compose it, before anything runs."""

    idx: int
    overrides: list[str]
    run_dir: Path
    resources: dict[str, Any] = field(default_factory=dict)
    status: str = "new"  # "new", "resume", "finished", "running", "refused"
    note: str = ""
    error: Optional[LadarunError] = field(default=None, repr=False)
    best: Optional[float] = None

    @property
    def to_run(self) -> bool:
        return self.status in ("new", "resume")

    @property
    def label(self) -> str:
        # Hydra's own overrides (hydra.launcher.*, ...) are the same for every job.
        return " ".join(o for o in self.overrides if not o.startswith("hydra."))


def plan_job(job: PlannedJob, config: Optional[dict[str, Any]]) -> PlannedJob:
    """Decide, in place, what happens to ``job`` from what its run directory holds.

    ``config`` is the job's resolved config, read only where the directory exists (None
    otherwise). A run another process holds now, or a folder of another configuration, is
    refused here with the one-line reason; a finished run is left out; an unfinished one resumes.
    """
    from .rundir.identity import check_existing
    from .rundir.lock import running_owner

    if config is None:
        return job

    def defaults() -> dict[str, Any]:  # pandas: only where a key was added since the run
        from .report.runs import default_config

        return default_config(config)

    try:
        owner = running_owner(job.run_dir)
        if owner is not None:
            job.status, job.note = "running", f"running now ({owner})"
            job.error = LadarunError(f"{job.run_dir} is being run right now by {owner}; left out")
            return job
        job.best = check_existing(job.run_dir, config, defaults)
    except LadarunError as err:
        job.status, job.note, job.error = "refused", str(err), err
        return job
    done = iterations_done(job.run_dir)
    if job.best is not None:
        job.status, job.note = "finished", f"finished (best {job.best:.2f}%)"
    elif done >= 0:
        job.status, job.note = "resume", f"resumes after iteration {done}"
    return job


def plan_summary(jobs: Sequence[PlannedJob], doing: str, do: str) -> str:
    """``Submitting 3 of 270 run(s) (265 finished, 2 left out).`` or ``Nothing to submit: ...``."""
    todo = sum(j.to_run for j in jobs)
    finished = sum(j.status == "finished" for j in jobs)
    left_out = len(jobs) - todo - finished
    if not todo:
        return f"Nothing to {do}: {finished} run(s) finished, {left_out} left out (see above)."
    return f"{doing} {todo} of {len(jobs)} run(s) ({finished} finished, {left_out} left out)."


def listing(jobs: Sequence[PlannedJob], launcher: str) -> str:
    """The dry run's table: every job, its run directory, what happens to it, its resources."""
    rows = [
        (f"#{j.idx}", j.label or "(no overrides)", str(j.run_dir), j.note or j.status) for j in jobs
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(4)] if rows else [0] * 4
    lines = [
        "  ".join(r[c].ljust(widths[c]) for c in range(4))
        + "  "
        + (describe(j.resources) if j.to_run else "-")
        for r, j in zip(rows, jobs)
    ]
    n = sum(j.to_run for j in jobs)
    groups = len({tuple(sorted(j.resources.items())) for j in jobs if j.to_run})
    head = (
        f"dry run ({launcher}): {len(jobs)} job(s), {n} would be submitted as {groups} "
        "array(s); nothing was submitted"
    )
    return "\n".join([head, *lines])


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


def interrupted_lines(
    jobs: Sequence[tuple[Sequence[str], Path]], hydra_overrides: Sequence[str]
) -> list[str]:
    """After Ctrl-C: one line per run of the sweep left unfinished, with the command resuming it.

    ``jobs`` are (overrides, run directory) pairs; a run that is finished or never started is
    left out. The command is the sweep's own with just this job's values: ``ladarun -m`` lands in
    the same run directory, which resumes after its last finished iteration.
    """
    from .rundir.files import CHECKPOINT, SUMMARY

    lines = []
    for overrides, run_dir in jobs:
        if (run_dir / SUMMARY).exists() or not (
            (run_dir / CHECKPOINT).exists() or iterations_done(run_dir) >= 0
        ):
            continue
        done = iterations_done(run_dir)
        where = f"after iteration {done}" if done >= 0 else "in its initial training"
        command = shlex.join(["ladarun", "-m", *hydra_overrides, *overrides])
        lines.append(f"  {run_dir} (stopped {where}): {command}")
    return lines


# --- resources --------------------------------------------------------------------------------
def run_resources(params: Mapping[str, Any], table: Mapping[str, Any], protocol: str) -> dict:
    """The resources of one run: its protocol's entry of ``table`` (else ``default``), with every
    key that ``params`` (the launcher's top level) sets to a value winning over it."""
    entry = table.get(protocol, table.get("default", {})) or {}
    out = {k: entry.get(k) for k in RESOURCE_KEYS}
    out.update({k: params[k] for k in RESOURCE_KEYS if params.get(k) is not None})
    return out


def describe(resources: Mapping[str, Any]) -> str:
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


def executor_parameters(
    kind: str,
    params: Mapping[str, Any],
    resources: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """submitit's parameters (unprefixed) for a group of runs with ``resources``.

    A Slurm run without a GPU asks for none (no gres request: CPU-only partitions accept it) and
    sees none: on a node without cgroup device confinement it would otherwise see the node's
    GPUs and ``device=auto`` would take another job's. submitit's local executor numbers GPUs
    from 0 whatever this process may see; it is given the GPUs CUDA_VISIBLE_DEVICES lists.
    """
    out = {k: v for k, v in {**params, **resources}.items() if v is not None}
    for key in ("submitit_folder", "max_num_timeout", "dry_run", "resources"):
        out.pop(key, None)
    if not out.get("gpus_per_node"):
        if kind == "slurm":
            out.pop("gpus_per_node", None)
            out["setup"] = [*(out.get("setup") or []), "export CUDA_VISIBLE_DEVICES="]
        return out
    visible = visible_gpus(environ)
    if kind == "local" and visible is not None:
        if len(visible) < int(out["gpus_per_node"]):
            exit_with(
                f"hydra.launcher.gpus_per_node={out['gpus_per_node']} but CUDA_VISIBLE_DEVICES "
                f"shows {len(visible)} GPU(s) here; lower it (0 runs on the CPU)"
            )
        out["visible_gpus"] = visible
    return out


def visible_gpus(environ: Mapping[str, str] = os.environ) -> Optional[tuple[int, ...]]:
    """The GPU indices CUDA_VISIBLE_DEVICES lists, or None when it is unset or names GPUs by UUID."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not all(v.isdigit() for v in items):
        return None
    return tuple(int(v) for v in items)


# --- sbatch's refusals ------------------------------------------------------------------------
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


def sbatch_refusal(stderr: str, n_jobs: int, resources: Mapping[str, Any]) -> str:
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


# --- Slurm's job states -----------------------------------------------------------------------
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


def lost_job_error(planned: PlannedJob, job: Any, state: str, accounting: bool) -> JobLostError:
    """One line for a job that ended without a result: its Slurm state, its run's own failure
    (failed.json) when it wrote one, and where its log is."""
    from .rundir.files import FAILURE

    if not state and accounting:
        state = sacct_state(job.job_id)
    what = f"ended ({state})" if state else "left the queue"
    reason = ""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        reason = f": {json.loads((planned.run_dir / FAILURE).read_text()).get('message', '')}"
    return JobLostError(
        f"job {job.job_id} ({planned.label}) {what} without a result{reason}; "
        "its run folder keeps every finished iteration (relaunch the sweep to resume it); "
        f"log: {job.paths.stderr}"
    )


# --- the time limit ---------------------------------------------------------------------------
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


# --- the guards of every job ------------------------------------------------------------------
_watched: set[int] = set()


def end_with_process(pid: int, poll_s: float = 1.0) -> None:
    """Kill this process as soon as process ``pid`` (the sweep's) is gone.

    A worker outliving its sweep keeps training a run nobody collects, holds the run's lock (a
    relaunch then refuses the run), and idles with its memory afterwards. A killed run loses at
    most the iteration in progress: every file is written whole and the lock goes with the
    process. SIGKILL, because submitit's job processes ignore SIGTERM.
    """
    if pid in _watched or pid == os.getpid():
        return
    _watched.add(pid)
    # A child is re-parented when its parent dies, which no reused PID can fake.
    child = os.getppid() == pid

    def gone() -> bool:
        if child:
            return os.getppid() != pid
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # PermissionError: reused by another user
            return True
        try:  # a process that ended but was not reaped yet (a zombie) answers kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except (OSError, IndexError):  # no /proc (macOS): kill(pid, 0) has to do
            return False

    def watch() -> None:
        while not gone():
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ladarun-end-with-sweep", daemon=True).start()


def drop_tracebacks(err: BaseException) -> None:
    """Cut ``err`` and the errors chained to it from their tracebacks.

    A sweep keeps a failed job's error until it ends; its traceback holds the frames of the
    run, and with them the dataset, the model and its optimizer (on a GPU, their memory for
    the rest of the sweep). The traceback is in the run's ladarun.log already.
    """
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__]


def release_memory(failed: bool) -> None:
    """Give back what a finished job left: unreachable objects after a failure, and the GPU
    memory torch's caching allocator keeps reserved (a worker runs job after job)."""
    torch = sys.modules.get("torch")
    on_gpu = bool(torch is not None and torch.cuda.is_initialized())
    if failed or on_gpu:
        gc.collect()
    if torch is not None and on_gpu:
        torch.cuda.empty_cache()


def use_gpu_of_job(num: int, device: str) -> Optional[int]:
    """In a parallel worker, make job ``num``'s ``cuda`` the GPU ``num % count``; its index.

    Every worker would otherwise resolve ``device=auto`` to cuda:0. Only ``auto`` and plain
    ``cuda`` are spread; an explicit ``cuda:k`` or ``cpu`` is left as asked.
    """
    if device not in ("auto", "cuda"):
        return None
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return None
    torch.cuda.set_device(num % count)
    return num % count


def exit_with(message: str) -> NoReturn:
    """Stop ladarun with one line: the launchers run outside the CLI's own error handling."""
    print(f"ladarun: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
