"""Time and Acq. time: a row's mean iteration (and acquisition) time over Random's, from runs on
one CPU model only.

One config takes different times on different CPUs (the committed budget table once showed
LADA_EntMix^fixed at 0.81x Random because Random ran on a 1.3x slower CPU), so a ratio is
given only where every finished run of the row records one CPU model (summary.json's ``cpu``)
and Random has finished runs on that model in the same section and dataset (its rows' runs or
reruns of its seeds on that CPU). Runs that predate the field are of an unknown CPU.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import pandas as pd

from .runs import Run

REFERENCE = "random"


def per_run_mean(runs: Sequence[Run], column: str) -> float:
    """Mean of a metrics.csv column over iterations >= 1, pooled over runs (iteration 0 is the
    initial training)."""
    frames = [
        r.metrics.loc[r.metrics["iteration"] >= 1, column] for r in runs if r.metrics is not None
    ]
    values = pd.concat(frames) if frames else pd.Series(dtype=float)
    return float(values.mean()) if len(values) else math.nan


def cpu_of(runs: Sequence[Run]) -> Optional[str]:
    """The CPU model every run records, or None (not recorded by one of them, or several)."""
    cpus = {r.cpu for r in runs}
    return cpus.pop() if len(cpus) == 1 and None not in cpus else None


def references(runs: Sequence[Run]) -> dict[str, tuple[float, float]]:
    """(iteration time, acquisition time) of Random per recorded CPU model, from its finished runs."""
    out = {}
    for cpu in sorted({r.cpu for r in runs if r.cpu}):
        same = [r for r in runs if r.cpu == cpu]
        out[cpu] = (per_run_mean(same, "iter_s"), per_run_mean(same, "acquire_s"))
    return out


def _cpu(row: pd.Series) -> Optional[str]:
    return None if pd.isna(row["cpu"]) else str(row["cpu"])


def _why_not(row: pd.Series, refs: dict[str, tuple[float, float]]) -> str:
    if _cpu(row) is None:
        return "mixed" if len(row["cpus"]) > 1 else "unrecorded"
    return "no Random on its CPU" if refs else "no Random with a recorded CPU"


def add_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """``time_ratio`` and ``acq_ratio`` of every cell (Random's own default row: 1), and
    ``no_ratio``: why a row with finished runs has none ("" where it has one)."""
    reference = df[(df["row"] == REFERENCE) & ~df["is_variant"]].set_index(["section", "dataset"])
    time_ratio, acq_ratio, why = [], [], []
    for _, row in df.iterrows():
        where = (row["section"], row["dataset"])
        refs = reference["timing"].get(where, {}) if where in reference.index else {}
        if row["row"] == REFERENCE and not row["is_variant"] and row["n"]:
            ratio: tuple[float, float] = (1.0, 1.0)
        elif _cpu(row) in refs:
            base = refs[str(row["cpu"])]
            ratio = (row["iter_s"] / base[0], row["acquire_s"] / base[1] if base[1] else math.nan)
        else:
            ratio = (math.nan, math.nan)
        time_ratio.append(ratio[0])
        acq_ratio.append(ratio[1])
        why.append("" if not row["n"] or not math.isnan(ratio[0]) else _why_not(row, refs))
    return df.assign(time_ratio=time_ratio, acq_ratio=acq_ratio, no_ratio=why)


REASONS = {
    "unrecorded": "the CPU is not recorded for some of its runs (they predate summary.json's cpu)",
    "mixed": "its runs ran on more than one CPU model",
    "no Random on its CPU": "Random has no finished run on its CPU here",
    "no Random with a recorded CPU": "no finished Random run here records its CPU",
}


def ratio_notes(df: pd.DataFrame, heading: str, dataset: str) -> list[str]:
    """One line for a section and dataset whose rows miss a Time ratio, naming them by reason."""
    part = df[df["no_ratio"] != ""]
    if not len(part):
        return []
    reasons = [
        f"{REASONS[why]}: {', '.join(rows['label'])}" for why, rows in part.groupby("no_ratio")
    ]
    return [
        f"{heading}, {dataset}: no Time or Acq. time ratio where a row and Random did not run on one "
        f"recorded CPU model (one config takes different times on different CPUs); "
        + "; ".join(reasons)
        + "."
    ]
