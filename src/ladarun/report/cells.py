"""The cells of Table 1 from a folder of runs: one per protocol section, dataset and row (and
ablation of a row), with its per-seed values, means, spreads, Time ratios and bold marks.

A cell reports, over its finished seeds (the paper reports 5), each run's final test accuracy,
the area under its learning curve (the mean test accuracy over iterations 0..N) and its best
test accuracy (the paper's metric, which selects on the test set), as mean and sample standard
deviation (ddof=1). Its Time is the mean wall time of a whole iteration (iterations >= 1)
divided by Random's on the same CPU model (:mod:`.timing`); Acq. time the same for the
acquisition step alone. Bold marks come from :func:`.stats.bold_rows`. Reads only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from .notes import adamixup_region, compared, mismatches, notes
from .rows import DATASETS, GROUPS, OTHER_GROUP, position, rows
from .runs import Run, load_runs
from .settings import canonical, normalized, section_headings, variants
from .stats import bold_rows
from .timing import add_ratios, cpu_of, per_run_mean, references

#: (column prefix, heading): the primary columns first; Best is the paper's, selected on the test set.
METRICS = (("final", "Final"), ("area", "Area"), ("best", "Best"))
BOLD_METRICS = ("final", "area")


class AggregateError(Exception):
    """Nothing to aggregate; the message names the fix."""


@dataclass
class Aggregate:
    cells: pd.DataFrame  # one row per (section, dataset, row, variant)
    runs: list[Run]  # every run found, usable or not
    # one row per usable run: run, section, dataset, row, label, is_variant, ...
    table: pd.DataFrame
    sections: dict[str, str]  # section id -> heading
    notes: list[str] = field(default_factory=list)
    # groups whose rows have different seed counts
    mismatches: list[str] = field(default_factory=list)

    @property
    def not_finished(self) -> list[Run]:
        return [r for r in self.runs if not r.finished]

    def left_out(self) -> list[str]:
        """One line per run that cannot be used (it is named, never silently dropped)."""
        return [f"{r.path}: {r.problem}" for r in self.runs if r.problem is not None]


def select_rows(
    found: Sequence[str], keep: Optional[Sequence[str]] = None, exclude: Sequence[str] = ()
) -> set[str]:
    """The row keys to show: ``keep`` (all rows when None) less ``exclude``.

    Keys are Table 1's (``random``, ``ent_infomixup``...; conf/method/) or those of rows outside
    it found among the runs (``found``); an unknown key raises AggregateError listing the valid
    ones.
    """
    table1 = [r.key for r in rows()]
    valid = table1 + sorted(set(found) - set(table1))
    for option, keys in (("--rows", keep or ()), ("--exclude", exclude)):
        unknown = [k for k in keys if k not in valid]
        if unknown:
            raise AggregateError(
                f"unknown row {', '.join(map(repr, unknown))} in {option}; valid rows: {', '.join(valid)}"
            )
    return set(valid if keep is None else keep) - set(exclude)


def aggregate(
    root: Path | str,
    paper: bool = False,
    keep: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
) -> Aggregate:
    """Read every run under ``root`` and build the Table 1 cells (reads only; writes nothing).

    ``keep`` and ``exclude`` choose the rows shown by key (:func:`select_rows`). Time ratios
    still divide by Random's time when Random is not shown; bold marks and seed-count notes
    compare the rows shown.
    """
    root = Path(root)
    if not root.is_dir():
        raise AggregateError(
            f"{root} is not a folder; pass the folder that holds the runs (e.g. outputs/)"
        )
    runs = load_runs(root)
    if not runs:
        raise AggregateError(
            f"no runs under {root} (no folder with metrics.csv, summary.json or .hydra/config.yaml); "
            "pass the folder the runs were written to (outputs/, or the sweep's hydra.sweep.dir)"
        )
    return aggregate_runs(runs, paper, keep, exclude)


def sections_of(usable: Sequence[Run]) -> dict[str, str]:
    """Section id (the canonical setting) -> heading; protocols of one name that differ get labels."""
    by_name: dict[str, dict[str, dict]] = {}
    for run in usable:
        by_name.setdefault(run.setting["protocol"].get("name", "?"), {})[canonical(run.setting)] = (
            run.setting
        )
    out: dict[str, str] = {}
    for name, group in by_name.items():
        out.update(section_headings(name, group))
    return out


def run_table(usable: Sequence[Run]) -> pd.DataFrame:
    """One row per usable run: where it is tabled (section, dataset, row) and its details."""
    return pd.DataFrame(
        {
            "run": list(usable),
            "section": [canonical(r.setting) for r in usable],
            "dataset": [r.dataset for r in usable],
            "row": [r.row.key for r in usable],
            "details": [canonical(normalized(r)) for r in usable],
            "seed": [r.seed for r in usable],
            "group": [r.row.group for r in usable],
            "label": ["" for _ in usable],
            "is_variant": [False for _ in usable],
        }
    )


def aggregate_runs(
    runs: Sequence[Run],
    paper: bool = False,
    keep: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
) -> Aggregate:
    """:func:`aggregate` on runs already loaded."""
    usable = [r for r in runs if r.problem is None]
    shown = select_rows([r.row.key for r in usable], keep, exclude)
    sections = sections_of(usable)
    table = run_table(usable)
    cells: list[dict[str, Any]] = []
    found_notes: list[str] = []
    for (sid, _dataset, row_key), cell in table.groupby(["section", "dataset", "row"], sort=False):
        more, said = _row_cells(table, cell, sections[sid], row_key in shown)
        cells += more
        found_notes += said
    cells_df = pd.DataFrame(cells)
    found_mismatches: list[str] = []
    if len(cells_df):
        cells_df = finish(cells_df, paper, sections, shown)
        found_mismatches = mismatches(cells_df, sections)
        found_notes += notes(cells_df, sections) + found_mismatches
    table = table[[r.problem is None for r in table["run"]]]  # duplicates are now out
    table = table[table["row"].isin(shown)] if len(table) else table
    return Aggregate(
        cells=cells_df,
        runs=[r for r in runs if _row_key(r) in shown | {None}],
        table=table,
        sections=sections,
        notes=found_notes,
        mismatches=found_mismatches,
    )


def _row_cells(
    table: pd.DataFrame, cell: pd.DataFrame, heading: str, shown: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """The cells of one row in one section and dataset: its default setting and its ablations;
    labels and ablation marks are written into ``table``."""
    first = cell["run"].iloc[0]
    found = variants({d: json.loads(d) for d in cell["details"].unique()}, first.default_details[0])
    said = []
    if len(found) > 1 and all(v for _, v in found.values()):
        said.append(
            f"{first.row.label} on {first.dataset} ({heading}) has runs under {len(found)} settings, "
            "none of them the package default (conf/): all are listed as ablations."
        )
    out = []
    for details, part in cell.groupby("details", sort=False):
        suffix, is_variant = found[details]
        label = first.row.label + (f" [{suffix}]" if suffix else "")
        table.loc[part.index, "label"] = label
        table.loc[part.index, "is_variant"] = is_variant
        kept, reruns = deduplicate(list(part["run"]))
        done = sorted((r for r in kept if r.finished), key=lambda r: r.seed)
        out.append(cell_values(kept, done, reruns, label, is_variant, part.iloc[0]))
        if first.row.augment == "adamixup" and done and shown:
            said += adamixup_region(done, label, first.dataset, heading)
    return out, said


def deduplicate(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """One run per seed: a finished run wins over an unfinished copy, then the first path. The
    others are marked unusable (named with their first copy) and returned apart when finished:
    Random's reruns still time the rows run on their CPU (:mod:`.timing`)."""
    seen: dict[int, Run] = {}
    reruns = []
    for run in sorted(runs, key=lambda r: (not r.finished, str(r.path))):
        if run.seed not in seen:
            seen[run.seed] = run
            continue
        run.problem = (
            f"a second run of seed {run.seed} (first: {seen[run.seed].path}); it is left out, "
            "move one of the two out of the runs folder"
        )
        if run.summary is not None:
            reruns.append(run)
    return list(seen.values()), reruns


def _measured(value: Optional[float]) -> float:
    """An accuracy of a finished run, which always has one (load_run marks a finished run without
    a full metrics.csv unusable)."""
    assert value is not None
    return float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    s = pd.Series(list(values), dtype=float)
    return (
        float(s.mean()) if len(s) else math.nan,
        float(s.std(ddof=1)) if len(s) > 1 else math.nan,
    )


def cell_values(
    kept: Sequence[Run],
    done: Sequence[Run],
    reruns: Sequence[Run],
    label: str,
    is_variant: bool,
    where: pd.Series,
) -> dict[str, Any]:
    """One cell: its identity, seeds, timings and per-seed values with their mean and std."""
    row = kept[0].row
    params = sorted({r.aux_params for r in done if r.aux_params is not None})
    out: dict[str, Any] = {
        "section": where["section"],
        "protocol": kept[0].protocol.get("name"),
        "dataset": where["dataset"],
        "group": row.group,
        "row": row.key,
        "label": label,
        "acquisition": row.acquisition,
        "augment": row.augment,
        "n": len(done),
        "n_unfinished": len(kept) - len(done),
        "seeds": " ".join(str(r.seed) for r in done),
        "iter_s": per_run_mean(done, "iter_s"),
        "acquire_s": per_run_mean(done, "acquire_s"),
        "param": params[0] if len(params) == 1 else "/".join(map(str, params)) or math.nan,
        "is_variant": is_variant,
        "devices": sorted({r.device for r in done if r.device}),
        "cpus": sorted({r.cpu for r in done if r.cpu}),
        "cpu": cpu_of(done),
        "timing": references([*done, *reruns]),
    }
    for metric, attribute in (
        ("best", "best_acc"),
        ("final", "final_acc"),
        ("area", "area"),
        ("best_val", "best_val_test_acc"),
    ):
        # Best (val) exists only for runs with a validation set; the others always have a value.
        values = [
            math.nan
            if metric == "best_val" and getattr(r, attribute) is None
            else _measured(getattr(r, attribute))
            for r in done
        ]
        out[f"{metric}_values"] = values
        out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_std(values)
    return out


def _row_key(run: Run) -> Optional[str]:
    """The run's row key; None when its config cannot say (an unusable run)."""
    try:
        return run.row.key
    except (KeyError, TypeError, AttributeError):
        return None


def _paper_columns(df: pd.DataFrame) -> pd.DataFrame:
    lookup = {r.key: r for r in rows()}
    paper = [
        lookup[k].paper_acc.get(d, (math.nan, math.nan)) if k in lookup else (math.nan, math.nan)
        for k, d in zip(df["row"], df["dataset"])
    ]
    return df.assign(
        paper_mean=[p[0] for p in paper],
        paper_std=[p[1] for p in paper],
        diff=df["best_mean"] - [p[0] for p in paper],
        paper_time=[lookup[k].paper_time if k in lookup else math.nan for k in df["row"]],
        paper_param=[lookup[k].paper_param if k in lookup else "" for k in df["row"]],
    )


def finish(
    df: pd.DataFrame, paper: bool, sections: dict[str, str], shown: set[str]
) -> pd.DataFrame:
    """Time ratios (over every row), then the rows shown: bold marks, paper columns and the
    paper's order."""
    df = add_ratios(df)
    df = df[df["row"].isin(shown)].reset_index(drop=True).copy()
    for metric in BOLD_METRICS:
        df[f"bold_{metric}"] = False
    for _, part in compared(df):
        for metric in BOLD_METRICS:
            df.loc[part.index, f"bold_{metric}"] = bold_rows(list(part[f"{metric}_values"]))
    if paper:
        df = _paper_columns(df)
    groups = {g: i for i, g in enumerate(GROUPS)}
    datasets = {d: i for i, d in enumerate(DATASETS)}
    order = pd.DataFrame(
        {
            "_s": df["section"].map(sections),
            "_d": df["dataset"].map(lambda d: datasets.get(d, len(datasets))),
            "_g": df["group"].map(lambda g: groups.get(g, len(groups) + (g == OTHER_GROUP))),
            "_r": df["row"].map(position),
        }
    )
    keys = ["_s", "_d", "dataset", "is_variant", "_g", "_r", "row", "label"]
    return df.join(order).sort_values(keys).drop(columns=list(order)).reset_index(drop=True)
