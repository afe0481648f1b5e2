"""Wall time and peak memory of whole ladarun runs, checked against the project's targets.

    python benchmarks/run.py runs [--data-dir DIR] [--out benchmarks/results.md] [--only NAME ...]

Each case runs the installed console script in a fresh subprocess, writing into a temporary
run directory (so a finished run is never skipped, and outputs/ is untouched), and measures:
- wall seconds of the whole command (start-up, data loading and the run);
- the child's peak resident memory (ru_maxrss from wait4);
- the run's own accuracy figures from its summary.json.
Results are appended to a Markdown file with the machine they came from. Do not run other
heavy jobs alongside: on a 2-core machine they distort every timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from iteration import machine  # the same machine line as bench.md

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    name: str
    overrides: list[str]
    target_s: float  # the target wall time; exceeding it is reported as a miss
    why: str
    needs_data: bool = False


CASES = [
    Case("demo", [], 90.0, "`make demo` (digits, CNN, quick protocol): about a minute (issue 2)"),
    Case(
        "fashion-quick-ent",
        ["dataset=fashion", "protocol=quick", "acquisition=ent"],
        180.0,
        "one Fashion-MNIST run of the quick protocol: at most 3 minutes on 2 CPU cores (issue 2)",
        needs_data=True,
    ),
]


def ladarun_exe() -> str:
    exe = Path(sys.executable).with_name("ladarun")
    if exe.exists():
        return str(exe)
    found = shutil.which("ladarun")
    if not found:
        sys.exit(
            "bench: the ladarun console script is not installed; run `make test` (or pip install -e .) first"
        )
    return found


def run_case(case: Case, data_dir: str, device: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"ladarun-bench-{case.name}-") as tmp:
        cmd = [
            ladarun_exe(),
            *case.overrides,
            f"data_dir={data_dir}",
            f"device={device}",
            "progress=false",
            f"hydra.run.dir={tmp}",
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(output, file=sys.stderr)
            raise SystemExit(
                f"bench: case {case.name} failed with exit code {proc.returncode}: {' '.join(cmd)}"
            )
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    return {
        "case": case.name,
        "command": "ladarun "
        + " ".join(case.overrides + ([f"data_dir={data_dir}"] if case.needs_data else [])),
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "target_s": case.target_s,
        "met": wall <= case.target_s,
        "run_s": summary["total_s"],
        "best_acc": summary["best_acc"],
        "final_acc": summary["final_acc"],
        "n_labeled": summary["n_labeled"],
        "device": summary["device"],
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("LADARUN_DATA", str(ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args(argv)

    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    for case in cases:
        if case.needs_data and not (Path(args.data_dir) / "FashionMNIST" / "raw").is_dir():
            print(
                f"bench: skipping {case.name}: no FashionMNIST/raw under --data-dir {args.data_dir}"
            )
            continue
        print(f"bench: {case.name} ...", flush=True)
        row = run_case(case, args.data_dir, args.device)
        rows.append(row)
        verdict = "met" if row["met"] else "MISSED"
        print(
            f"bench: {case.name}: {row['wall_s']:.1f} s wall (target {case.target_s:.0f} s, {verdict}), "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB, best acc {row['best_acc']:.2f}%",
            flush=True,
        )
    if not rows:
        sys.exit("bench: nothing ran")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with out.open("a") as f:
        if new:
            f.write(
                "# Benchmark results\n\nAppended by `make bench` (`python benchmarks/run.py runs`); newest last. "
                "Wall time covers the whole command: interpreter start-up, data loading and the run.\n"
            )
        f.write(f"\n## {dt.datetime.now().isoformat(timespec='minutes')} on {machine()}\n\n")
        f.write(
            "| case | command | wall s | target s | met | peak RSS MiB | best acc % | final acc % | labels | device |\n"
        )
        f.write("|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(
                f"| {r['case']} | `{r['command']}` | {r['wall_s']:.1f} | {r['target_s']:.0f} | "
                f"{'yes' if r['met'] else 'NO'} "
                f"| {r['peak_rss_mib']:.0f} | {r['best_acc']:.2f} | {r['final_acc']:.2f} | "
                f"{r['n_labeled']} | {r['device']} |\n"
            )
    print(f"bench: results appended to {out}")
    if not all(r["met"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
