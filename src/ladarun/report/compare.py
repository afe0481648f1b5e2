"""``ladarun-compare``: does a row beat another? Differences in Best, Final and Area with Welch tests,
and where the two mean learning curves cross.

    ladarun-compare results/fashion_budget                       # every LADA row vs Random and vs its base
    ladarun-compare results/fashion_budget --pairs ent_infomixup:badge var_infomixup:var

Rows are Table 1's keys (conf/method/). By default every LADA row found (InfoMixup and InfoSTN,
learned and fixed tau) is compared with Random and with its base acquisition (LADA_EntMix with
Max Entropy, LADA_VarMix with Var Ratio, ...). Only finished runs of each row's default setting
count (ablations are left out, as in the table's bold). Per pair and metric: the two means, their
difference, the one-sided Welch p-value that the first row is ahead (the test the table's bold
uses) and the two-sided one. Curves: the mean test accuracy over seeds at every iteration; the
label counts where the sign of the difference changes, and the share of iterations where the
first row is ahead.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from .runs import curve_stats
from .table import METRICS, AggregateError, aggregate, welch

#: Augmentations whose rows are LADA's (the look-ahead), compared by default.
LADA_AUGMENTS = ("infomixup_fixed", "infomixup", "infostn_fixed", "infostn")


@dataclass
class Comparison:
    section: str
    dataset: str
    row: str
    against: str
    label: str
    against_label: str
    n: tuple[int, int]
    metrics: dict[str, tuple[float, float, float, float, float]]  # mean a, mean b, diff, p1, p2
    crossings: list[int]  # label counts where the sign of mean(a) - mean(b) changes
    ahead_share: float  # share of the shared iterations where a's mean is above b's


def crossings(a: pd.Series, b: pd.Series) -> tuple[list[int], float]:
    """Label counts where the sign of ``a - b`` changes (a tie carries the sign before it), and
    the share of the shared points where ``a`` is above."""
    diff = (a - b).dropna()
    out, sign = [], 0
    for labels, d in diff.items():
        s = int(d > 0) - int(d < 0)
        if s and sign and s != sign:
            out.append(int(labels))
        sign = s or sign
    return out, float((diff > 0).mean()) if len(diff) else math.nan


def default_pairs(rows: Sequence[str], acquisition: dict[str, str], augment: dict[str, str]):
    """Every LADA row found against Random and against its base acquisition's row."""
    pairs = []
    for row in rows:
        if augment[row] in LADA_AUGMENTS:
            for other in ("random", acquisition[row]):
                if other in rows and (row, other) not in pairs:
                    pairs.append((row, other))
    return pairs


def compare(
    root: Path | str, pairs: Optional[Sequence[tuple[str, str]]] = None
) -> list[Comparison]:
    """The comparisons of ``pairs`` (default: :func:`default_pairs`) in every section and dataset."""
    agg = aggregate(root)
    cells = agg.cells[(agg.cells["n"] > 0) & ~agg.cells["is_variant"]]
    out = []
    for (sid, dataset), part in cells.groupby(["section", "dataset"], sort=False):
        by_row = part.set_index("row")
        found = list(by_row.index)
        todo = (
            default_pairs(found, dict(by_row["acquisition"]), dict(by_row["augment"]))
            if pairs is None
            else [(a, b) for a, b in pairs if a in found and b in found]
        )
        # mean test accuracy per labeled-set size of each row's finished runs (all reach every point)
        here = agg.table[(agg.table["section"] == sid) & (agg.table["dataset"] == dataset)]
        compared = set(part["label"])  # rows with finished runs, default settings
        curves = {
            label: curve_stats(
                [r.metrics for r in group["run"] if r.finished], "n_labeled", "test_acc"
            ).set_index("n_labeled")["mean"]
            for label, group in here.groupby("label")
            if label in compared
        }
        for a, b in todo:
            ca, cb = by_row.loc[a], by_row.loc[b]
            metrics = {}
            for metric, _ in METRICS:
                va, vb = ca[f"{metric}_values"], cb[f"{metric}_values"]
                ma, mb = sum(va) / len(va), sum(vb) / len(vb)
                metrics[metric] = (ma, mb, ma - mb, *welch(va, vb))
            cross, ahead = crossings(curves[ca["label"]], curves[cb["label"]])
            out.append(
                Comparison(
                    agg.sections[sid],
                    dataset,
                    a,
                    b,
                    ca["label"],
                    cb["label"],
                    (int(ca["n"]), int(cb["n"])),
                    metrics,
                    cross,
                    ahead,
                )
            )
    if pairs is not None:
        asked = {(c.row, c.against) for c in out}
        missing = [f"{a}:{b}" for a, b in pairs if (a, b) not in asked]
        if missing:
            raise AggregateError(
                f"no finished runs of both rows of {', '.join(missing)} in one section and dataset "
                f"under {root}; the rows with finished runs there: {', '.join(sorted(set(cells['row'])))}"
            )
    return out


def _p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return f"{p:.4f}" if p < 0.01 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def markdown(comparisons: Sequence[Comparison]) -> str:
    lines = []
    head = None
    for c in comparisons:
        if (c.section, c.dataset) != head:
            head = (c.section, c.dataset)
            lines += [
                "",
                f"## {c.section}, {c.dataset}",
                "",
                "| Row | against | n | "
                + " | ".join(f"{name} Δ (p one-sided / two-sided)" for _, name in METRICS)
                + " | curves cross at (labels) | row ahead (share of iterations) |",
                "|---|---|---|" + "---|" * len(METRICS) + "---|---|",
            ]
        cells = [
            f"{c.metrics[m][0]:.2f} vs {c.metrics[m][1]:.2f}: {c.metrics[m][2]:+.2f} "
            f"({_p(c.metrics[m][3])} / {_p(c.metrics[m][4])})"
            for m, _ in METRICS
        ]
        cross = ", ".join(map(str, c.crossings)) or "never"
        lines.append(
            f"| {c.label} | {c.against_label} | {c.n[0]} / {c.n[1]} | {' | '.join(cells)} | "
            f"{cross} | {c.ahead_share:.2f} |"
        )
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ladarun-compare",
        description="Best, Final and Area differences between rows, with Welch tests, and where their "
        "learning curves cross.",
    )
    parser.add_argument("runs", help="the folder of runs (as for ladarun-table)")
    parser.add_argument(
        "--pairs",
        nargs="+",
        metavar="ROW:OTHER",
        help="row keys to compare, e.g. ent_infomixup:random (default: every LADA row against Random "
        "and against its base acquisition)",
    )
    args = parser.parse_args(argv)
    pairs = None
    if args.pairs:
        bad = [p for p in args.pairs if p.count(":") != 1 or "" in p.split(":")]
        if bad:
            parser.error(
                f"--pairs takes ROW:OTHER, e.g. ent_infomixup:random; got {', '.join(bad)}"
            )
        pairs = [tuple(p.split(":")) for p in args.pairs]
    try:
        result = compare(args.runs, pairs)
    except AggregateError as e:
        sys.exit(f"ladarun-compare: error: {e}")
    if not result:
        sys.exit(
            f"ladarun-compare: error: no LADA row with finished runs beside Random or its base "
            f"acquisition under {args.runs}; name the rows with --pairs ROW:OTHER"
        )
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    main()
