"""Best, final and area of two groups of finished runs: the difference with its 95 % confidence
interval and a two-sided Welch p per metric (uncorrected: a family of three, exploratory).

    .venv/bin/python benchmarks/compare_runs.py results/fashion_quick/fashion/ent-infomixup \\
        results/fashion_quick_tabulated/fashion/ent-infomixup

Each folder holds one run per seed (``seed*/summary.json``); unfinished runs (no summary.json)
are left out and named. Used for issue 19's comparison of the look-ahead estimators
(benchmarks/lookahead.md).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

from ladarun.report.stats import welch

METRICS = (("best_acc", "Best"), ("final_acc", "Final"), ("area", "Area"))


def summaries(folder: Path) -> dict[str, dict]:
    runs = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        path = run / "summary.json"
        if path.exists():
            runs[run.name] = json.loads(path.read_text())
        else:
            print(f"{run}: unfinished, left out")
    return runs


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.exit("usage: compare_runs.py FOLDER_A FOLDER_B (each with seed*/summary.json)")
    a, b = (summaries(Path(x)) for x in args)
    print(f"A = {args[0]} ({', '.join(a)})\nB = {args[1]} ({', '.join(b)})\n")
    print(
        "| metric | A mean ± sd | B mean ± sd | B - A [95 % CI] | Welch p (two-sided) |\n|---|---|---|---|---|"
    )
    for key, label in METRICS:
        xa, xb = [r[key] for r in a.values()], [r[key] for r in b.values()]

        def fmt(x: list[float]) -> str:
            sd = statistics.stdev(x) if len(x) > 1 else float("nan")
            return f"{statistics.mean(x):.2f} ± {sd:.2f} (n={len(x)})"

        d = welch(xb, xa)
        ci = f"[{d.low:+.2f}, {d.high:+.2f}]"
        print(f"| {label} | {fmt(xa)} | {fmt(xb)} | {d.diff:+.2f} {ci} | {d.p:.2f} |")
    shared = sorted(set(a) & set(b))
    if shared:
        print("\nSame seed (the same initial labeled set and initial training in both):")
        for seed in shared:
            row = ", ".join(
                f"{label} {a[seed][key]:.2f} -> {b[seed][key]:.2f}" for key, label in METRICS
            )
            print(f"- {seed}: {row}")


if __name__ == "__main__":
    main()
