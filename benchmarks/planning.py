"""How long ladarun takes to plan a sweep of 270 jobs (experiment=table1), before any job runs.

    python benchmarks/run.py planning [--out benchmarks/planning.md] [--label TEXT]

Three cases, each the installed console script in a fresh process (interpreter start-up
included) in a temporary folder, against the target of issue 35: at most 10 s each.
- ``dry-run-new``: ``ladarun -m experiment=table1 hydra/launcher=slurm hydra.launcher.dry_run=true``
  with no run made yet: every job composed, listed with its run directory and resources;
- ``dry-run-finished``: the same once every run is finished: each run directory is read and
  its configuration compared with the job's;
- ``local-finished``: ``hydra/launcher=local`` on the finished sweep: nothing to run.
The finished runs are made for the benchmark: a summary.json holding the config Hydra itself
composes for the job (one composition per job, about a minute, not timed). Wall and CPU seconds
of the child and the load average are recorded: on a shared 2-core machine the wall time
follows the load, the CPU time much less. ``--label`` names what was measured (e.g. "main
before issue 35"); run another checkout's code with PYTHONPATH=<checkout>/src.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "experiment=table1"]
DRY = ["hydra/launcher=slurm", "hydra.launcher.dry_run=true"]
TARGET_S = 10.0
JOBS = 270


def run(args: list[str], cwd: Path, timeout: float) -> dict:
    """Wall and CPU seconds of ``ladarun <args>`` and its output."""
    exe = Path(sys.executable).with_name("ladarun")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    res = subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        sys.exit(f"bench: ladarun {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return {"wall_s": wall, "cpu_s": cpu, "load": load, "out": res.stdout + res.stderr}


def jobs_of(listing: str) -> list[tuple[list[str], str]]:
    """(overrides, run directory) of each job of a dry run's listing."""
    found = re.findall(r"^#\d+\s+(.+?)\s{2,}(outputs/\S+)\s", listing, re.M)
    return [(overrides.split(), run_dir) for overrides, run_dir in found]


def finish(jobs: list[tuple[list[str], str]], cwd: Path) -> None:
    """A finished run in every job's directory: summary.json with Hydra's own config of it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ladarun.conf import CONF_DIR

    os.chdir(cwd)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", SWEEP[1:], RunMode.MULTIRUN)
        for overrides, run_dir in jobs:
            cfg = loader.load_sweep_config(master, overrides)
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            config = OmegaConf.to_container(task, resolve=True)
            Path(run_dir).mkdir(parents=True)
            summary = {"best_acc": 50.0, "run": {"config": config}}
            (Path(run_dir) / "summary.json").write_text(json.dumps(summary))


def measure(timeout: float) -> list[dict]:
    cases = []
    with tempfile.TemporaryDirectory(prefix="ladarun-bench-planning-") as tmp:
        cwd = Path(tmp)
        new = run([*SWEEP, *DRY], cwd, timeout)
        jobs = jobs_of(new["out"])
        assert len(jobs) == JOBS, f"the dry run listed {len(jobs)} jobs, not {JOBS}"
        cases.append(
            {"case": "dry-run-new", **new, "ok": f"{JOBS} would be submitted" in new["out"]}
        )
        here = os.getcwd()
        try:
            finish(jobs, cwd)
        finally:
            os.chdir(here)
        done = run([*SWEEP, *DRY], cwd, timeout)
        listed = [ln for ln in done["out"].splitlines() if ln.startswith("#")]
        ok = sum("finished (best 50.00%)" in ln for ln in listed) == JOBS
        cases.append({"case": "dry-run-finished", **done, "ok": ok})
        local = run([*SWEEP, "hydra/launcher=local"], cwd, timeout)
        ok = f"Nothing to run: {JOBS} run(s) finished" in local["out"]
        cases.append({"case": "local-finished", **local, "ok": ok})
    return cases


def commit() -> str:
    res = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return res.stdout.strip() or "unknown"


def write(out: Path, cases: list[dict], label: str) -> None:
    from iteration import machine

    head = f"\n## {dt.datetime.now().strftime('%Y-%m-%dT%H:%M')} on {machine()}: {label}\n\n"
    lines = [
        head,
        "| case | wall s | CPU s | 1-min load before | target s | met | as expected |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    for c in cases:
        met = "yes" if c["wall_s"] <= TARGET_S else "no"
        lines.append(
            f"| {c['case']} | {c['wall_s']:.1f} | {c['cpu_s']:.1f} | {c['load']:.1f} | "
            f"{TARGET_S:g} | {met} | {'yes' if c['ok'] else 'NO'} |\n"
        )
    if not out.exists():
        out.write_text(
            "# Planning a sweep of 270 jobs\n\nAppended by `make bench` (`python benchmarks/run.py "
            "planning`, benchmarks/planning.py); newest last. Each case is a fresh `ladarun` "
            "process; the wall time includes its start-up.\n"
        )
    with open(out, "a") as f:
        f.writelines(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "planning.md")
    parser.add_argument("--label", default=None, help="what was measured (default: git commit)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per case, seconds")
    args = parser.parse_args(argv)
    cases = measure(args.timeout)
    for c in cases:
        print(
            f"{c['case']}: {c['wall_s']:.1f} s wall, {c['cpu_s']:.1f} s CPU, load {c['load']:.1f}"
        )
    write(args.out, cases, args.label or f"commit {commit()}")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
