"""``make test-slurm``: ladarun's Slurm launcher on a real one-node Slurm cluster.

Installs nothing. Where slurmctld, slurmd and munged are installed (Debian and Ubuntu:
``apt-get install slurmctld slurmd slurm-client munge``), it starts munged, slurmctld and slurmd
as background daemons of this user, configured in a temporary directory (unprivileged ports, no
cgroups, no accounting: ladarun must work without sacct), then:

1. makes the reference: the 4 runs of the sweep one after another, uninterrupted, 1 thread each;
2. lists the sweep with ``hydra.launcher.dry_run=true`` (nothing is submitted);
3. checks that sbatch's refusal of a GPU on this GPU-less node is one line naming the fix;
4. runs the 4-job sweep through ``hydra/launcher=slurm`` (1 CPU per run, so 2 at a time): once
   a run has finished a few iterations it is preempted with USR2 (``scancel --signal=USR2``,
   the signal Slurm sends before a time limit or on preemption: submitit requeues the job
   itself), and another with ``scontrol requeue`` (Slurm kills and requeues it);
5. checks that every metrics.csv equals the reference run's (wall-clock columns aside), that both
   preempted runs resumed, that each Slurm task ran 1 thread (SLURM_CPUS_PER_TASK) and that the
   missing sacct was one warning, and that the CPU array's job script asks for no GPU and empties
   CUDA_VISIBLE_DEVICES;
6. relaunches the sweep: every run is finished, so nothing is submitted;
7. aggregates the table with ladarun-table;
8. interrupts the waiting process with Ctrl-C (one line; the job runs on), cancels a job from
   outside (one failure line, the wait ends), and gives a run a time limit shorter than one
   iteration (requeued once, then stopped with one line naming hydra.launcher.timeout_min),

and stops the daemons it started, whatever happened. Where Slurm is not installed it says so and
exits 0 (.ci/run does not need it). ``KEEP=1`` keeps the temporary directory.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
# The sweep: 4 runs of a few tens of seconds each on the synthetic set (no download).
SWEEP = [
    "dataset=synthetic",
    "protocol=smoke",
    "protocol.iterations=30",
    "protocol.epochs=10",
    "progress=false",
    "seed=0,1,2,3",
]
# USR2 is taken as a preemption, not a timeout, while the job has run less than
# min(80 %, limit - 10 min) of its limit (submitit's rule): with 60 min, the first 48 min.
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=60"]


def find(name: str) -> Optional[str]:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )


def say(message: str) -> None:
    print(f"[test-slurm] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """munged, slurmctld and slurmd, configured in ``root`` and run as this user."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}

    def configure(self) -> None:
        r = self.root
        for d in ("munge", "ctld", "d", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        subprocess.run([find("mungekey"), "--create", f"--keyfile={key}"], check=True)
        key.chmod(0o400)
        user = getpass.getuser()
        (r / "slurm.conf").write_text(
            f"""\
ClusterName=ladarun-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/d
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
# No cgroups and no accounting: what an unprivileged test cluster can have.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self) -> None:
        r = self.root
        munge = [
            find("munged"),
            "--foreground",
            "--force",  # the key and socket live in a temporary directory of this user
            f"--key-file={r}/munge/munge.key",
            f"--socket={r}/munge/munge.socket",
            f"--pid-file={r}/munge/munged.pid",
            f"--log-file={r}/log/munged.log",
            f"--seed-file={r}/munge/munged.seed",
        ]
        self.spawn(munge)
        self.wait_for(lambda: (r / "munge" / "munge.socket").exists(), "munged's socket")
        self.spawn([find("slurmctld"), "-D", "-i", "-f", str(r / "slurm.conf")])
        self.wait_for(lambda: self.run("scontrol", "ping").returncode == 0, "slurmctld")
        self.spawn([find("slurmd"), "-D", "-f", str(r / "slurm.conf"), "-N", self.host])
        self.wait_for(
            lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", "an idle node"
        )

    def spawn(self, cmd: list) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        say(f"started {Path(cmd[0]).name} (PID {self.procs[-1].pid})")

    def wait_for(self, ready, what: str, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if ready():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        raise SystemExit(f"[test-slurm] FAILED: no {what} (logs in {self.root / 'log'})")

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``cmd``'s outcome; after ``timeout`` (scancel retries while a job requeues), rc -1."""
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, env=self.env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, -1, "", "timed out")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            say(f"stopped {Path(str(p.args[0])).name} (PID {p.pid})")


def ladarun(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(BIN / "ladarun"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check and res.returncode != 0:
        print(res.stdout + res.stderr)
        raise SystemExit(f"[test-slurm] FAILED: ladarun {' '.join(args)} exited {res.returncode}")
    return res


def rows(path: Path) -> list[dict]:
    """metrics.csv without its wall-clock columns (``*_s``), which differ between equal runs."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in csv.DictReader(f)]


def iterations(path: Path) -> int:
    return len(rows(path)) if path.exists() else 0


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"[test-slurm] FAILED: {what}")
    say(f"ok: {what}")


def preempt_two_runs(
    cluster: Cluster, work: Path, sweep: subprocess.Popen, run_dirs: list[Path]
) -> dict[int, int]:
    """Preempt run 0 with USR2 and run 1 with ``scontrol requeue``, each as soon as it has
    finished 4 iterations; the iteration each was preempted after."""
    preempt = {0: ("USR2", ["scancel", "--signal=USR2"]), 1: ("requeue", ["scontrol", "requeue"])}
    done_at: dict[int, int] = {}
    sent: list[subprocess.Popen] = []
    end = time.time() + 900
    while sweep.poll() is None and time.time() < end:
        ids = re.findall(r"Submitted job (\d+)", (work / "sweep.log").read_text())
        # Both runs take an iteration in well under a second: each is preempted as soon as it
        # has 4, without waiting for the other's command (scancel may retry for seconds).
        for task, (how, cmd) in preempt.items():
            metrics = work / run_dirs[task] / "metrics.csv"
            if ids and task not in done_at and iterations(metrics) >= 4:
                done_at[task] = iterations(metrics) - 1
                target = f"{ids[0]}_{task}"
                sent.append(
                    subprocess.Popen(
                        [*cmd, target],
                        env=cluster.env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                say(f"   {how} of job {target} after iteration {done_at[task]}")
        time.sleep(0.2)
    for p in sent:
        p.wait(timeout=60)
    return done_at


def scenario(cluster: Cluster, work: Path) -> None:
    env = {k: v for k, v in cluster.env.items() if k not in ("OMP_NUM_THREADS", "LADARUN_DATA")}
    env["PYTHONUNBUFFERED"] = "1"
    one_thread = {**env, "OMP_NUM_THREADS": "1"}

    say("1. the reference: the same 4 runs, uninterrupted, one after another (1 thread)")
    t = time.time()
    ladarun("-m", *SWEEP, "hydra.sweep.dir=reference", cwd=work, env=one_thread)
    say(f"   {time.time() - t:.0f} s")

    say("2. hydra.launcher.dry_run=true lists the jobs and submits nothing")
    dry = ladarun("-m", *SWEEP, *LAUNCHER, "hydra.launcher.dry_run=true", cwd=work, env=env)
    print(dry.stdout.rstrip())
    run_dirs = [Path(m) for m in re.findall(r"^#\d+\s.*?\s(outputs/\S+)\s", dry.stdout, re.M)]
    check(len(run_dirs) == 4, "the dry run lists 4 jobs with their run directories")
    check(cluster.run("squeue", "-h").stdout.strip() == "", "the dry run submitted nothing")

    say("3. a GPU on this node without GPUs: sbatch's refusal in one line")
    gpu = ladarun(
        "-m", *SWEEP, *LAUNCHER, "hydra.launcher.gpus_per_node=1", cwd=work, env=env, check=False
    )
    print(gpu.stderr.rstrip())
    check(
        gpu.returncode == 2
        and gpu.stderr.strip().count("\n") == 0
        and "gpus_per_node=0" in gpu.stderr,
        "sbatch's refusal is one line naming hydra.launcher.gpus_per_node=0",
    )

    say("4. the sweep through hydra/launcher=slurm, with two runs preempted")
    log = open(work / "sweep.log", "w")
    sweep = subprocess.Popen(
        [str(BIN / "ladarun"), "-m", *SWEEP, *LAUNCHER],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    done_at = preempt_two_runs(cluster, work, sweep, run_dirs)
    if sweep.poll() is None:
        sweep.kill()
    out = (work / "sweep.log").read_text()
    print(out.rstrip())
    check(sweep.returncode == 0, "the sweep ended with status 0")
    check(sorted(done_at) == [0, 1], "two runs were preempted mid-run (USR2, scontrol requeue)")
    check(
        out.count("Slurm accounting (sacct) is not available") == 1,
        "the missing sacct is one warning",
    )

    say("5. every run equals its uninterrupted reference")
    for i, run_dir in enumerate(run_dirs):
        ref = work / "reference" / run_dir.relative_to("outputs")
        got = rows(work / run_dir / "metrics.csv")
        check(
            got == rows(ref / "metrics.csv"),
            f"{run_dir}/metrics.csv equals the reference ({len(got)} rows)",
        )
        summary = json.loads((work / run_dir / "summary.json").read_text())
        if i in done_at:
            check(
                summary.get("resumed_at"),
                f"run {i} resumed (resumed_at {summary.get('resumed_at')})",
            )
        check("(1 threads)" in json.dumps(summary), f"run {i} ran 1 thread (SLURM_CPUS_PER_TASK=1)")
    logs = "".join(p.read_text() for p in (work / "outputs" / ".submitit").glob("*_0/*_0_log.err"))
    check("Caught signal SIGUSR2" in logs and "preempted" in logs, "USR2 was taken as a preemption")
    scripts = list((work / "outputs" / ".submitit").rglob("*_submission.sh"))
    check(
        bool(scripts)
        and all("export CUDA_VISIBLE_DEVICES=\n" in p.read_text() for p in scripts)
        and all("--gpus" not in p.read_text() for p in scripts),
        "the CPU array asks for no GPU and its jobs see none (CUDA_VISIBLE_DEVICES emptied)",
    )

    say("6. relaunching the finished sweep submits nothing")
    again = ladarun("-m", *SWEEP, *LAUNCHER, cwd=work, env=env)
    print((again.stdout + again.stderr).rstrip())
    check(
        "Nothing to submit" in again.stdout + again.stderr,
        "the relaunch submits nothing and says so",
    )

    say("7. the table")
    table = subprocess.run(
        [str(BIN / "ladarun-table"), "outputs"], cwd=work, env=env, capture_output=True, text=True
    )
    print(table.stdout.rstrip() + table.stderr.rstrip())
    check(table.returncode == 0, "ladarun-table aggregated the sweep")

    # A run that cannot finish in any allocation: its initial training alone takes hours.
    endless = [*SWEEP[:2], "protocol.initial_epochs=100000", "progress=false", "seed=0"]

    say("8. Ctrl-C on the waiting process: one line, and the job runs on")
    waiting = subprocess.Popen(
        [str(BIN / "ladarun"), "-m", *endless, "hydra.sweep.dir=ctrlc", *LAUNCHER],
        cwd=work,
        env=env,
        stdout=open(work / "ctrlc.log", "w"),
        stderr=subprocess.PIPE,
        text=True,
    )
    array = ""
    end = time.time() + 300
    while not array and time.time() < end:
        time.sleep(1)
        found = re.findall(r"Submitted job (\d+)", (work / "ctrlc.log").read_text())
        array = found[0] if found else ""
    time.sleep(3)  # into the waiting
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=120)
    print(err.rstrip())
    state = cluster.run("squeue", "-h", "-j", array, "-o", "%T").stdout.strip()
    cluster.run("scancel", array)
    check(
        waiting.returncode == 130
        and err.strip().count("\n") == 0
        and f"the jobs run on in Slurm (squeue -j {array}" in err
        and state in ("PENDING", "RUNNING"),
        f"Ctrl-C while waiting is one line, and job {array} ran on ({state})",
    )

    say("8b. a job killed from outside (scancel): one line, and the wait ends")
    log = open(work / "lost.log", "w")
    lost = subprocess.Popen(
        [str(BIN / "ladarun"), "-m", *endless, "hydra.sweep.dir=lost", *LAUNCHER],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t = time.time()
    while lost.poll() is None and time.time() - t < 300:
        ids = re.findall(r"Submitted job (\d+)", (work / "lost.log").read_text())
        if (
            ids
            and cluster.run("squeue", "-h", "-j", ids[0], "-o", "%T").stdout.strip() == "RUNNING"
        ):
            time.sleep(5)
            cluster.run("scancel", ids[0])
            say(f"   scancel {ids[0]}")
            break
        time.sleep(1)
    lost.wait(timeout=300)
    out = (work / "lost.log").read_text()
    print(out.rstrip())
    check(
        lost.returncode == 1 and "without a result" in out and "1 of 1 jobs failed" in out,
        f"the killed job is one failure line, {time.time() - t:.0f} s after submission",
    )

    say("9. a time limit shorter than one iteration: requeued once, then a clear stop")
    t = time.time()
    short = ladarun(
        "-m",
        *endless,
        "hydra.sweep.dir=timelimit",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=45",
        cwd=work,
        env=env,
        check=False,
    )
    print((short.stdout + short.stderr).rstrip())
    logs = "".join(p.read_text() for p in (work / "timelimit" / ".submitit").glob("*/*_log.*"))
    check(
        short.returncode == 1
        and "reached its time limit of 1 min twice" in short.stderr
        and "hydra.launcher.timeout_min" in short.stderr
        and len(re.findall(r"^submitit INFO .*Requeued job", logs, re.M)) == 1,
        f"the run stopped after one requeue, naming hydra.launcher.timeout_min ({time.time() - t:.0f} s)",
    )


def main() -> int:
    missing = [n for n in DAEMONS + CLIENTS + ("mungekey",) if find(n) is None]
    if missing:
        say(
            f"skipped: Slurm is not installed here ({', '.join(missing)} not found). On Debian or "
            "Ubuntu: sudo apt-get install slurmctld slurmd slurm-client munge (docs/launchers.md)"
        )
        return 0
    root = Path(tempfile.mkdtemp(prefix="ladarun-slurm-"))
    version = subprocess.run([find("slurmctld"), "-V"], capture_output=True, text=True).stdout
    say(f"one-node cluster in {root}: {version.strip()}")
    cluster = Cluster(root / "cluster")
    ok = False
    try:
        cluster.configure()
        cluster.start()
        work = root / "work"
        work.mkdir()
        scenario(cluster, work)
        ok = True
    finally:
        cluster.stop()
        if ok and not os.environ.get("KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"kept {root} (daemon logs in {root / 'cluster' / 'log'})")
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
