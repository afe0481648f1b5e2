"""The Notes under Table 1: what a reader must know to read the numbers (seed counts that differ,
runs under several protocols, mixed devices or CPUs, Time ratios left out, AdaMixup's region)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .rows import OTHER_GROUP
from .runs import Run
from .timing import ratio_notes

DATASET_LABELS = {
    "fashion": "Fashion",
    "svhn": "SVHN",
    "cifar10": "CIFAR-10",
    "digits": "Digits",
    "synthetic": "Synthetic",
}


def dataset_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def compared(df: pd.DataFrame):
    """The (section, dataset, group) groups whose rows are compared: rows with results, no
    ablations, Table 1 groups only."""
    shown = df[(df["n"] > 0) & ~df["is_variant"] & (df["group"] != OTHER_GROUP)]
    return shown.groupby(["section", "dataset", "group"], sort=False)


def mismatches(df: pd.DataFrame, sections: dict[str, str]) -> list[str]:
    """One line per compared group whose rows have different numbers of finished seeds."""
    out = []
    for (sid, dataset, group), part in compared(df):
        if part["n"].nunique() > 1:
            counts = ", ".join(f"{r.label} n={r.n}" for r in part.itertuples())
            out.append(
                f"seed counts differ in {sections[sid]}, {dataset_label(dataset)}, {group}: {counts} "
                "(the Welch test allows for unequal n; rerun the missing seeds for a like-for-like comparison)"
            )
    return out


def adamixup_region(done: Sequence[Run], label: str, dataset: str, section: str) -> list[str]:
    """What AdaMixup's learned mixing region did (its region_a/region_delta columns): a region
    that has grown to the whole of [0, 1] means its λ are U(0, 1), i.e. the policy collapsed."""
    frames = [
        r.metrics
        for r in done
        if r.metrics is not None and {"region_a", "region_delta"} <= set(r.metrics)
    ]
    if not frames:
        return []
    m = pd.concat([f[f["iteration"] >= 1] for f in frames])
    whole = float((m["region_delta"] > 0.99).mean())
    last = pd.concat([f[f["iteration"] == f["iteration"].max()] for f in frames])
    return [
        f"{label} on {dataset} ({section}): its learned mixing region [a, a + Δ] spans more than 0.99 of [0, 1] in "
        f"{100 * whole:.0f}% of iterations (last iteration: a = {last['region_a'].mean():.3g}, "
        f"Δ = {last['region_delta'].mean():.3g}, mean over {len(frames)} runs)"
        + (
            "; its λ are then ~U(0, 1): the policy collapsed, as the faithful method does here (docs/methods.md §8)."
            if whole > 0.5
            else "."
        )
    ]


def _protocol_notes(df: pd.DataFrame) -> list[str]:
    notes = []
    for (dataset, _row), part in df.groupby(["dataset", "row"]):
        protocols = sorted(part["section"].unique())
        if len(protocols) > 1:
            names = ", ".join(sorted({str(p) for p in part["protocol"]}))
            notes.append(
                f"{part['label'].iloc[0]} on {dataset} has runs under {len(protocols)} protocol settings ({names}); "
                "each is reported in its own section, never averaged together."
            )
    return notes


def notes(df: pd.DataFrame, sections: dict[str, str]) -> list[str]:
    """The notes on the cells ``df`` (one row per section, dataset and row shown)."""
    out = _protocol_notes(df)
    for sid, part in df.groupby("section", sort=False):
        devices = sorted(set().union(*part["devices"]))
        if len(devices) > 1:
            out.append(f"{sections[sid]} mixes devices ({'; '.join(devices)}).")
        cpus = sorted(set().union(*part["cpus"]))
        if len(cpus) > 1:
            out.append(
                f"{sections[sid]} mixes CPUs ({'; '.join(cpus)}): one config and seed give different runs on "
                "them, apart as seeds are (docs/methods.md §14)."
            )
        for dataset, dpart in part[part["n"] > 0].groupby("dataset", sort=False):
            if not (dpart["row"] == "random").any():
                out.append(
                    f"{sections[sid]}: no finished Random run on {dataset}, so its Time column is empty."
                )
            else:
                out += ratio_notes(dpart, sections[sid], dataset)
    return out
