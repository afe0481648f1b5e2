"""A sweep's workers end with their parent, and Ctrl-C on a sweep names how to resume each run.

Real sweeps of two runs in a subprocess (slow: each waits for its runs to start): the sweep's
process is killed (SIGKILL, SIGTERM) or interrupted (SIGINT to its process group, as a
terminal's Ctrl-C), then the runs' locks must be free and their processes gone, so a relaunch
resumes them instead of refusing them as "running now". Timeouts here only catch a hang.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import LADARUN, SMOKE, ladarun, sigint_as_a_terminal_gives_it
from ladarun.launchers import iterations_done
from ladarun.rundir.lock import running_owner

# Iteration 0 (1 epoch) ends within seconds; each later one (100 epochs) takes long enough to
# be caught in the middle. 2 x 40 queries fit synthetic's pool.
LONG = [*SMOKE, "protocol.iterations=40", "protocol.epochs=100", "seed=0,1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
HANG_S = 300


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(LADARUN), "-m", *overrides],
        cwd=tmp_path,
        env=ENV,
        stdout=open(tmp_path / "sweep.out", "w"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        preexec_fn=sigint_as_a_terminal_gives_it,
    )


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "outputs").glob("synthetic/*/*/seed*/metrics.csv"))


def wait_until(condition, what: str) -> None:
    end = time.time() + HANG_S
    while not condition():
        assert time.time() < end, f"hang: {what}"
        time.sleep(0.5)


def holders(dirs: list[Path]) -> list[int]:
    """PIDs holding the runs' locks now."""
    owners = [running_owner(d) for d in dirs]
    return [int(re.search(r"PID (\d+)", o).group(1)) for o in owners if o]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().rpartition(")")[2].split()[0] != "Z"


def relaunch_plan(tmp_path: Path, *overrides: str) -> str:
    """What a relaunch would do with each run: the Slurm launcher's dry run of the same sweep."""
    res = ladarun(
        "-m", *overrides, "hydra/launcher=slurm", "hydra.launcher.dry_run=true", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, sig",
    [("local", signal.SIGKILL), ("local", signal.SIGTERM), ("submitit_local", signal.SIGKILL)],
)
def test_workers_end_with_a_killed_sweep_and_free_their_runs(tmp_path, launcher, sig):
    sweep = start(tmp_path, f"hydra/launcher={launcher}", *LONG)
    wait_until(lambda: len(holders(run_dirs(tmp_path))) == 2, "both runs started")
    workers = holders(run_dirs(tmp_path))
    assert sweep.pid not in workers  # the runs are in worker processes
    os.kill(sweep.pid, sig)
    sweep.wait(timeout=HANG_S)
    wait_until(lambda: not any(alive(pid) for pid in workers), "the workers ended")
    assert holders(run_dirs(tmp_path)) == []  # the locks went with them
    plan = relaunch_plan(tmp_path, *LONG)
    assert "running now" not in plan and plan.count(" resumes after iteration ") == 2, plan


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local", "submitit_local"])
def test_ctrl_c_names_each_stopped_run_and_the_command_that_resumes_it(tmp_path, launcher):
    started = 1 if launcher == "basic" else 2  # the basic launcher runs one job at a time
    sweep = start(tmp_path, f"hydra/launcher={launcher}", *LONG)

    def mid_run() -> bool:  # every started run is held and has finished its iteration 0
        dirs = run_dirs(tmp_path)
        return len(holders(dirs)) == started and all(iterations_done(d) >= 0 for d in dirs)

    wait_until(mid_run, "the runs finished their iteration 0")
    workers = holders(run_dirs(tmp_path))
    os.killpg(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=HANG_S)
    assert sweep.returncode == 130
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1 + started, err
    assert lines[0].startswith(f"ladarun: interrupted; {started} run(s) stopped before finishing")
    wait_until(lambda: not any(alive(pid) for pid in workers), "the workers ended")
    for line in lines[1:]:
        run_dir, command = re.match(
            r"  (\S+) \(stopped after iteration \d+\): (.+)$", line
        ).groups()
        assert command.startswith(f"ladarun -m hydra/launcher={launcher} dataset=synthetic")
        # The command resumes that run and no other.
        args = [a for a in command.split()[2:] if not a.startswith("hydra/launcher=")]
        plan = relaunch_plan(tmp_path, *args)
        jobs = [ln for ln in plan.splitlines() if ln.startswith("#")]
        assert len(jobs) == 1 and f"  {run_dir}  resumes after iteration" in jobs[0], plan
