"""``ladarun-table``: Table 1 (final, area and best accuracy, Time, Param) from a folder of runs.

The cells are computed in :mod:`.cells` (with the statistics of :mod:`.stats` and the Time
ratios of :mod:`.timing`) and written by :mod:`.render` as table1.md, table1.csv and table1.tex.
Runs that are unfinished, failed or unusable are listed with what to do about them. The command
only reads runs; it writes the three tables and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cells import METRICS, Aggregate, AggregateError, aggregate, select_rows
from .paths import output_folder, runs_folder
from .render import describe, to_csv, to_latex, to_markdown
from .stats import bold_rows, welch

__all__ = [
    "METRICS",
    "Aggregate",
    "AggregateError",
    "aggregate",
    "bold_rows",
    "main",
    "select_rows",
    "welch",
]


def _keys(text: str) -> list[str]:
    """A comma-separated list of row keys."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("give row keys separated by commas, e.g. random,ent")
    return keys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ladarun-table",
        description="Write table1.md, table1.csv and table1.tex (the paper's Table 1) from a folder of "
        "ladarun runs. Runs are only read; nothing else is written.",
    )
    p.add_argument(
        "runs_dir", nargs="?", default="outputs", help="folder searched for runs (default: outputs)"
    )
    p.add_argument("--out", default=None, help="where the tables go (default: RUNS_DIR)")
    p.add_argument("--paper", action="store_true", help="add the paper's values and the difference")
    p.add_argument(
        "--require-equal-seeds",
        action="store_true",
        help="fail (exit 2, no table written) when the rows of a group have different numbers of "
        "finished seeds; without it the table is written and the groups are listed under Notes",
    )
    p.add_argument(
        "--rows",
        type=_keys,
        default=None,
        metavar="KEY,...",
        help="only these rows, by method= key, in the paper's order (e.g. random,ent,ent_infomixup); "
        "Time is still relative to Random",
    )
    p.add_argument(
        "--exclude", type=_keys, default=(), metavar="KEY,...", help="leave out these rows"
    )
    p.add_argument(
        "--label",
        default="tab:table1",
        help="prefix of each LaTeX table's \\label (default tab:table1: tab:table1-quick-cnn-fashion)",
    )
    return p


def _error(message: str) -> int:
    print(f"ladarun-table: error: {message}", file=sys.stderr)
    return 2


def _write(agg: Aggregate, root: Path, out: Path, paper: bool, label: str) -> str:
    md = to_markdown(agg, root, paper)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1.md").write_text(md)
    to_csv(agg, paper).to_csv(out / "table1.csv", index=False)
    (out / "table1.tex").write_text(to_latex(agg, paper, label))
    return md


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.runs_dir)
    out = Path(args.out) if args.out else root
    problem = runs_folder(root) or output_folder(out, "--out")
    if problem:
        return _error(problem)
    try:
        agg = aggregate(root, paper=args.paper, keep=args.rows, exclude=args.exclude)
    except AggregateError as err:
        return _error(str(err))
    if args.require_equal_seeds and agg.mismatches:
        for line in agg.mismatches:
            _error(line)
        return _error("--require-equal-seeds: no table written")
    try:
        md = _write(agg, root, out, args.paper, args.label)
    except OSError as err:
        return _error(
            f"cannot write the tables to {out} ({err.strerror or err}); give --out a writable folder"
        )
    print(md)
    finished = sum(r.finished for r in agg.runs)
    print(
        f"ladarun-table: {len(agg.runs)} runs, {finished} finished; wrote {out / 'table1.md'}, "
        "table1.csv, table1.tex",
        file=sys.stderr,
    )
    for line in agg.mismatches:
        print(f"ladarun-table: warning: {line}", file=sys.stderr)
    for run in agg.not_finished:
        status, what = describe(run)
        print(f"ladarun-table: {status}: {run.path}: {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
