"""``ladarun-compare``: does a row beat another? Differences in Final, Area and Best with their
95 % confidence intervals, Welch p-values Holm-corrected within a stated family, and where the
two mean learning curves cross.

    ladarun-compare results/fashion_budget --primary   # the family the preset declared, alone
    ladarun-compare results/fashion_budget             # the primary family, then the exploratory one
    ladarun-compare results/fashion_budget --pairs ent_infomixup:badge var_infomixup:var

Rows are Table 1's keys (conf/method/). The primary family is declared by the sweep preset that
made the runs (:mod:`.family`); it is printed first and Holm-corrected within itself. Everything
else printed is exploratory, Holm-corrected within its own family: by default every LADA row
(InfoMixup and InfoSTN, learned and fixed tau) against Random and against its base acquisition,
on Final, Area and Best; with ``--pairs``, the pairs named; in both, less the primary family's
tests (a test is in one family only).
Tests are two-sided unless ``--alternative`` names a direction on the command line, before
any data are read. Only finished runs of each row's default setting count (no ablations).
Curves: the label counts where the sign of the difference of the mean curves changes, and the
share of iterations where the first row is ahead (descriptive, untested).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from .cells import METRICS, Aggregate, AggregateError, aggregate
from .family import FamilySpec, declared, declaring_presets
from .notes import dataset_label
from .paths import runs_folder
from .runs import curve_stats
from .stats import ALPHA, ALTERNATIVES, Difference, holm, welch

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
    metrics: dict[str, Difference]  # metric -> the difference and its test
    crossings: list[int]  # label counts where the sign of mean(a) - mean(b) changes
    ahead_share: float  # share of the shared iterations where a's mean is above b's
    holm: dict[str, float] = field(default_factory=dict)  # metric -> Holm-adjusted p in its family


@dataclass
class Family:
    kind: str  # "primary" or "exploratory"
    section: str
    dataset: str
    description: str
    metrics: tuple[str, ...]
    alternative: str
    comparisons: list[Comparison]

    @property
    def size(self) -> int:
        """The tests Holm corrects over: every comparison and metric with a p-value."""
        return sum(not math.isnan(d.p) for c in self.comparisons for d in c.metrics.values())


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


@dataclass
class Block:
    """The finished default-setting rows of one section and dataset, with their mean curves."""

    section: str
    dataset: str
    rows: pd.DataFrame  # cells indexed by row key
    curves: dict[str, pd.Series]  # label -> mean test accuracy per labeled-set size
    presets: list[str]  # the sweep presets (experiment.name) that made its runs


def blocks(agg: Aggregate) -> list[Block]:
    cells = (
        agg.cells[(agg.cells["n"] > 0) & ~agg.cells["is_variant"]] if len(agg.cells) else agg.cells
    )
    out = []
    for (sid, dataset), part in cells.groupby(["section", "dataset"], sort=False):
        here = agg.table[(agg.table["section"] == sid) & (agg.table["dataset"] == dataset)]
        finished = here["run"].map(lambda r: r.finished).astype(bool)
        here = here[~here["is_variant"].astype(bool) & finished]
        curves = {
            label: curve_stats([r.metrics for r in g["run"]], "n_labeled", "test_acc").set_index(
                "n_labeled"
            )["mean"]
            for label, g in here.groupby("label")
        }
        presets = sorted({str((r.config.get("experiment") or {}).get("name")) for r in here["run"]})
        out.append(Block(agg.sections[sid], dataset, part.set_index("row"), curves, presets))
    return out


def comparison(
    block: Block, a: str, b: str, metrics: Sequence[str], alternative: str
) -> Comparison:
    ca, cb = block.rows.loc[a], block.rows.loc[b]
    tests = {m: welch(ca[f"{m}_values"], cb[f"{m}_values"], alternative) for m in metrics}
    cross, ahead = crossings(block.curves[ca["label"]], block.curves[cb["label"]])
    n = (int(ca["n"]), int(cb["n"]))
    return Comparison(
        block.section, block.dataset, a, b, ca["label"], cb["label"], n, tests, cross, ahead
    )


def family(
    kind: str,
    block: Block,
    description: str,
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    alternative: str,
    skip: frozenset[tuple[str, str, str]] = frozenset(),
) -> Family:
    """The comparisons of ``pairs`` on ``metrics`` (less the (row, other, metric) tests in
    ``skip``), Holm-adjusted over all of them."""
    comps = [
        comparison(block, a, b, [m for m in metrics if (a, b, m) not in skip], alternative)
        for a, b in pairs
    ]
    keys = [(c, m) for c in comps for m in c.metrics]
    for (c, m), p in zip(keys, holm([c.metrics[m].p for c, m in keys])):
        c.holm[m] = p
    return Family(
        kind, block.section, block.dataset, description, tuple(metrics), alternative, comps
    )


def problems(block: Block, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """One line per row of a family that cannot be tested as declared: fewer than two finished
    seeds, or a seed count other than the family's others."""
    where = f"{block.section}, {dataset_label(block.dataset)}"
    names = list(dict.fromkeys(r for pair in pairs for r in pair))
    counts = {r: int(block.rows.loc[r, "n"]) if r in block.rows.index else 0 for r in names}
    out = [
        f"{where}: row {r} has {n} finished seed{'s' if n != 1 else ''}; the family needs at least 2 "
        "in every row (run its missing seeds)"
        for r, n in counts.items()
        if n < 2
    ]
    if not out and len(set(counts.values())) > 1:
        common = max(set(counts.values()), key=list(counts.values()).count)
        out += [
            f"{where}: row {r} has {n} finished seeds where the family's other rows have {common}; "
            "run the same seeds for every row of the family"
            for r, n in counts.items()
            if n != common
        ]
    return out


def _primary(
    block: Block, spec: FamilySpec, alternative: str
) -> tuple[Optional[Family], list[str]]:
    pairs = spec.pairs()
    found = problems(block, pairs)
    if found:
        return None, found
    description = f"declared by experiment={spec.preset} (conf/experiment/{spec.preset}.yaml): {spec.describe()}"
    return family("primary", block, description, pairs, spec.metrics, alternative), []


def compare(
    root: Path | str | Aggregate,
    pairs: Optional[Sequence[tuple[str, str]]] = None,
    primary: bool = False,
    alternative: str = "two-sided",
) -> tuple[list[Family], list[str]]:
    """The families to print for the runs under ``root`` (a folder, or its runs already
    aggregated), and one line per family that could not be tested (see :func:`problems`).
    ``primary``: only the declared families."""
    agg = root if isinstance(root, Aggregate) else aggregate(root)
    found, lines = [], []
    all_metrics = [m for m, _ in METRICS]
    for block in blocks(agg):
        specs = [s for s in map(declared, block.presets) if s is not None]
        taken: set[tuple[str, str, str]] = set()
        for spec in specs:
            fam, said = _primary(block, spec, alternative)
            lines += said
            if fam is not None:
                found.append(fam)
                taken |= {(c.row, c.against, m) for c in fam.comparisons for m in fam.metrics}
        if primary:
            continue
        found += _exploratory(block, pairs, all_metrics, taken, alternative)
    if pairs is not None:
        asked = {(c.row, c.against) for f in found for c in f.comparisons}
        missing = [f"{a}:{b}" for a, b in pairs if (a, b) not in asked]
        if missing:
            rows = sorted(set(agg.cells["row"])) if len(agg.cells) else []
            raise AggregateError(
                f"no finished runs of both rows of {', '.join(missing)} in one section and dataset "
                f"under {root}; the rows with finished runs there: {', '.join(rows)}"
            )
    return found, lines


def _exploratory(
    block: Block,
    pairs: Optional[Sequence[tuple[str, str]]],
    metrics: Sequence[str],
    taken: set[tuple[str, str, str]],
    alternative: str,
) -> list[Family]:
    here = list(block.rows.index)
    if pairs is None:
        todo = default_pairs(here, dict(block.rows["acquisition"]), dict(block.rows["augment"]))
        description = "every LADA row against Random and against its base acquisition, on Final, Area and Best"
    else:
        todo = [(a, b) for a, b in pairs if a in here and b in here]
        description = "the pairs named with --pairs, on Final, Area and Best"
    todo = [(a, b) for a, b in todo if any((a, b, m) not in taken for m in metrics)]
    if not todo:
        return []
    if taken:
        description += ", less the primary family's tests"
    return [family("exploratory", block, description, todo, metrics, alternative, frozenset(taken))]


def _p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return (
        "< 0.0001"
        if p < 0.0001
        else f"{p:.4f}"
        if p < 0.01
        else f"{p:.3f}"
        if p < 0.1
        else f"{p:.2f}"
    )


def _ci(d: Difference) -> str:
    if math.isnan(d.low):
        return "-"
    return f"[{d.low:+.2f}, {d.high:+.2f}]".replace("inf", "∞")


def _verdict(d: Difference, p_holm: float) -> str:
    if math.isnan(p_holm) or p_holm >= ALPHA:
        return "not separated"
    return "row ahead" if d.diff > 0 else "row behind"


def _header(fam: Family) -> list[str]:
    test = (
        "two-sided"
        if fam.alternative == "two-sided"
        else f"one-sided ({fam.alternative}, named on the command line)"
    )
    title = "Primary family" if fam.kind == "primary" else "Exploratory (not confirmatory)"
    return [
        f"### {title}: {fam.description}",
        "",
        f"{fam.size} {test} Welch tests on the per-seed values, Holm-adjusted over these {fam.size}; "
        f"a verdict needs Holm p < {ALPHA:g}. Δ = row − against, with its 95 % confidence interval.",
        "",
    ]


def markdown(families: Sequence[Family]) -> str:
    lines: list[str] = []
    head = None
    for fam in families:
        if (fam.section, fam.dataset) != head:
            head = (fam.section, fam.dataset)
            lines += ["", f"## {fam.section}; {dataset_label(fam.dataset)}", ""]
        lines += _header(fam)
        rows = []
        for c in fam.comparisons:
            for m in [m for m in fam.metrics if m in c.metrics]:
                d = c.metrics[m]
                rows.append(
                    [c.label, c.against_label, dict(METRICS)[m], f"{c.n[0]} / {c.n[1]}", f"{d.mean_a:.2f}",
                     f"{d.mean_b:.2f}", f"{d.diff:+.2f}", _ci(d), _p(d.p), _p(c.holm[m]), _verdict(d, c.holm[m])]
                )  # fmt: skip
        header = [
            "Row",
            "against",
            "metric",
            "n",
            "row",
            "against",
            "Δ",
            "95 % CI",
            "p",
            "Holm p",
            "verdict",
        ]
        lines += [_table(header, rows), ""]
        if fam.kind == "exploratory":
            lines += _curves(fam)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    frame = pd.DataFrame(rows, columns=header).map(lambda s: str(s).replace("|", "\\|"))
    align = ["left"] * 3 + ["right"] * (len(header) - 4) + ["left"]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _curves(fam: Family) -> list[str]:
    rows = [
        [
            c.label,
            c.against_label,
            ", ".join(map(str, c.crossings)) or "never",
            f"{c.ahead_share:.2f}",
        ]
        for c in fam.comparisons
    ]
    header = ["Row", "against", "mean curves cross at (labels)", "row ahead (share of iterations)"]
    frame = pd.DataFrame(rows, columns=header)
    return [
        "Learning curves (descriptive, untested):",
        "",
        frame.to_markdown(index=False, disable_numparse=True),
        "",
    ]


def _pair(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or "" in parts:
        raise argparse.ArgumentTypeError(
            f"--pairs takes ROW:OTHER, e.g. ent_infomixup:random; got {text}"
        )
    return parts[0], parts[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ladarun-compare",
        description="Final, Area and Best differences between rows, with 95 %% confidence intervals, Welch "
        "tests Holm-corrected within their family, and where the learning curves cross.",
    )
    p.add_argument("runs", help="the folder of runs (as for ladarun-table)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--primary",
        action="store_true",
        help="only the primary family the runs' sweep preset declares (experiment.primary), Holm within it",
    )
    which.add_argument(
        "--pairs",
        nargs="+",
        type=_pair,
        metavar="ROW:OTHER",
        help="row keys to compare, e.g. ent_infomixup:random: an exploratory family of their own, "
        "printed after the primary family and without its tests",
    )
    p.add_argument(
        "--alternative",
        choices=ALTERNATIVES,
        default="two-sided",
        help="two-sided (default), or the direction every test takes (greater: row > against), named "
        "before the data are read",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    problem = runs_folder(Path(args.runs), "RUNS")
    if problem:
        sys.exit(f"ladarun-compare: error: {problem}")
    try:
        agg = aggregate(args.runs)
        families, lines = compare(agg, args.pairs, args.primary, args.alternative)
    except AggregateError as e:
        sys.exit(f"ladarun-compare: error: {e}")
    for line in agg.left_out():
        print(f"ladarun-compare: left out: {line}", file=sys.stderr)
    kind = "error" if args.primary else "warning: primary family not tested"
    for line in lines:
        print(f"ladarun-compare: {kind}: {line}", file=sys.stderr)
    if args.primary and (lines or not families):
        # The declared families that could be tested are printed; the exit status says that
        # another one could not (a folder of two presets, one of them unfinished).
        if families:
            sys.stdout.write(markdown(families))
        if not lines:
            presets = ", ".join(declaring_presets()) or "none"
            print(
                f"ladarun-compare: error: no run under {args.runs} was made by a preset that declares a "
                f"primary family (experiment.primary); the presets that do: {presets}",
                file=sys.stderr,
            )
        sys.exit(2)
    if not families:
        sys.exit(
            f"ladarun-compare: error: no LADA row with finished runs beside Random or its base "
            f"acquisition under {args.runs}; name the rows with --pairs ROW:OTHER"
        )
    sys.stdout.write(markdown(families))


if __name__ == "__main__":
    main()
