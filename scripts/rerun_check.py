"""Rerun committed runs with today's code and compare them digit for digit.

    .venv/bin/python scripts/rerun_check.py --data-dir ../shared/data --out /tmp/rerun \\
        results/fashion_budget/fashion/coreset-none/seed3 results/fashion_budget/fashion/badge-none/seed3

Each run is rerun from its own ``.hydra/config.yaml`` (its data_dir replaced by ``--data-dir``)
into ``OUT/<i>``, on as many intra-op threads as its summary.json says it had. Then every
metrics.csv column except the wall-clock ones (``*_s``) and every queries.csv cell must be
equal, and summary.json's best, final and area too. A run made on another CPU model than this
one (summary.json's ``cpu``) is not expected to match and is refused (docs/methods.md §14).
Prints one line per run and exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence


def rows(path: Path, drop_timings: bool) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        found = list(csv.DictReader(f))
    if drop_timings:
        found = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in found]
    return found


def differences(committed: Path, rerun: Path) -> list[str]:
    """What differs between two run folders, in words (empty: the same run)."""
    out = []
    for name, drop in (("metrics.csv", True), ("queries.csv", False)):
        a, b = rows(committed / name, drop), rows(rerun / name, drop)
        # a column added since the committed run (val_acc) must be empty in the rerun
        added = set(b[0]) - set(a[0]) if a and b else set()
        b = [{k: v for k, v in r.items() if k not in added or v} for r in b]
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            out.append(f"{name} differs from row {first} ({len(a)} vs {len(b)} rows)")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (committed, rerun))
    for key in ("best_acc", "final_acc", "area", "n_labeled"):
        if sa.get(key) != sb.get(key):
            out.append(f"summary {key}: {sa.get(key)} vs {sb.get(key)}")
    return out


def rerun(run: Path, out: Path, data_dir: str) -> None:
    """Run ``run``'s config again into ``out`` with the thread count it had."""
    import torch
    from omegaconf import OmegaConf

    from ladarun.runner import run_from_config
    from ladarun.runtime import cpu_name

    summary = json.loads((run / "summary.json").read_text())
    if summary.get("cpu") not in (None, cpu_name()):
        raise SystemExit(f"{run} ran on {summary['cpu']}, this is {cpu_name()}: not comparable")
    threads = re.search(r"\((\d+) threads?\)", summary.get("device", ""))
    if threads:
        torch.set_num_threads(int(threads.group(1)))
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.data_dir, cfg.progress = data_dir, False
    run_from_config(cfg, out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="committed run folders")
    parser.add_argument("--out", type=Path, required=True, help="where the reruns go")
    parser.add_argument("--data-dir", required=True, help="the folder that holds the datasets")
    args = parser.parse_args(argv)
    failed = False
    for i, run in enumerate(args.runs):
        target = args.out / str(i)
        rerun(run, target, args.data_dir)
        diff = differences(run, target)
        failed |= bool(diff)
        print(f"{run}: {'; '.join(diff) if diff else 'identical (metrics, queries, summary)'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
