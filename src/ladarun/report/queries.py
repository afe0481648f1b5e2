"""``ladarun-queries``: the class balance of the points each run picked (its queries.csv).

Per run: how many points the acquisitions picked (iterations 1..N; ``--initial`` adds the
initial set), how many classes they cover, the entropy of their class histogram (in bits, and
as a share of the most even split, 1.0 = as many picks of every class) and the shares of the
least and most picked class. Per Table 1 row: the mean ± std of those over seeds.

A run without queries.csv (finished before the file existed) can still be read from a kept
checkpoint.pt (``keep_checkpoint=true``), whose ``labeled_at`` says which points were labeled
when; the labels then come from the dataset, read from ``--data-dir`` (default: the run's own
``data_dir``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from ..errors import LadarunError
from ..rundir.files import QUERIES
from .runs import Run, load_runs

STATS = ("picks", "classes", "entropy_bits", "balance", "min_share", "max_share")


def class_balance(labels: Sequence[int], num_classes: int) -> dict[str, float]:
    """Balance statistics of the class labels of a set of picks."""
    counts = pd.Series(list(labels), dtype="int64").value_counts()
    n = int(counts.sum())
    shares = [counts.get(c, 0) / n if n else float("nan") for c in range(num_classes)]
    entropy = -sum(p * math.log2(p) for p in shares if p > 0)
    return {
        "picks": n,
        "classes": int((counts > 0).sum()),
        "entropy_bits": entropy,
        "balance": entropy / math.log2(num_classes) if num_classes > 1 else float("nan"),
        "min_share": min(shares),
        "max_share": max(shares),
    }


def picks_from_checkpoint(run: Run, data_dir: Optional[str]) -> pd.DataFrame:
    """index/label/iteration of every labeled point, from checkpoint.pt's ``labeled_at`` and the
    dataset's labels (the dataset is loaded as the run loaded it)."""
    import torch
    from omegaconf import OmegaConf

    from ..config import build  # the one place that builds config nodes (Hydra's instantiate)

    state = torch.load(run.path / "checkpoint.pt", map_location="cpu", weights_only=False)
    labeled_at = state["labeled_at"].cpu()
    node = OmegaConf.create(run.config["dataset"])
    data = build(node, name=run.dataset).load(
        data_dir or run.config["data_dir"], torch.device("cpu")
    )
    index = torch.nonzero(labeled_at >= 0).flatten()
    return pd.DataFrame(
        {
            "index": index.numpy(),
            "label": data.y_train.cpu()[index].numpy(),
            "iteration": labeled_at[index].numpy(),
        }
    )


def run_picks(run: Run, data_dir: Optional[str]) -> tuple[Optional[pd.DataFrame], str]:
    """A run's picks and where they came from ("queries.csv", "checkpoint.pt"), or None and why not."""
    if (run.path / QUERIES).is_file():
        return pd.read_csv(run.path / QUERIES), QUERIES
    if run.checkpoint:
        try:
            return picks_from_checkpoint(run, data_dir), "checkpoint.pt"
        except LadarunError as err:  # the dataset's files are not there
            return None, f"checkpoint.pt, but its labels cannot be read: {err}"
    return None, f"no {QUERIES} (the run predates it) and no checkpoint.pt to derive the picks from"


def balance_table(
    root: Path | str,
    initial: bool = False,
    data_dir: Optional[str] = None,
    until: Optional[int] = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row of balance statistics per run under ``root``, and a note per run left out.

    ``until``: count only the picks of iterations up to this one, to compare runs at one budget
    (an unfinished run read from its checkpoint against finished ones).
    """
    records: list[dict[str, Any]] = []
    notes = []
    for run in load_runs(Path(root)):
        if run.problem is not None:
            notes.append(f"{run.path}: {run.problem}")
            continue
        picks, source = run_picks(run, data_dir)
        if picks is None:
            notes.append(f"{run.path}: {source}")
            continue
        # every class is in the initial set (protocol.initial_per_class of each)
        num_classes = int(picks["label"].max()) + 1
        chosen = picks if initial else picks[picks["iteration"] > 0]
        if until is not None:
            chosen = chosen[chosen["iteration"] <= until]
        records.append(
            {
                "dataset": run.dataset,
                "row": run.row.label,
                "seed": run.seed,
                "iterations": int(picks["iteration"].max()),
                "status": run.status,
                "source": source,
                **class_balance(chosen["label"].tolist(), num_classes),
                "path": str(run.path),
            }
        )
    return pd.DataFrame.from_records(records), notes


def by_row(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each statistic, per dataset and Table 1 row."""
    grouped = per_run.groupby(["dataset", "row"], sort=False)
    out = grouped[list(STATS)].agg(["mean", "std"])
    out.columns = [f"{stat}_{how}" for stat, how in out.columns]
    out.insert(0, "seeds", grouped.size())
    return out.reset_index()


def to_markdown(per_row: pd.DataFrame) -> str:
    header = ["dataset", "row", "seeds", "picks", "classes", "entropy (bits)", "balance"]
    header += ["min share", "max share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    pm = lambda r, s, f="{:.2f}": (
        f.format(r[f"{s}_mean"])
        + ("" if pd.isna(r[f"{s}_std"]) else " ± " + f.format(r[f"{s}_std"]))
    )
    for _, r in per_row.iterrows():
        cells = [r["dataset"], r["row"], str(r["seeds"]), pm(r, "picks", "{:.0f}")]
        cells += [pm(r, "classes", "{:.1f}"), pm(r, "entropy_bits"), pm(r, "balance")]
        cells += [pm(r, "min_share"), pm(r, "max_share")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-queries",
        description="The class balance of each run's picks (queries.csv), per run and per Table 1 row.",
    )
    parser.add_argument(
        "runs_dirs",
        nargs="*",
        default=["outputs"],
        metavar="RUNS_DIR",
        help="folders searched for runs, read together (default: outputs)",
    )
    parser.add_argument("--initial", action="store_true", help="count the initial labeled set too")
    parser.add_argument(
        "--until",
        type=int,
        default=None,
        metavar="N",
        help="count only the picks of iterations 1..N (to compare runs at one budget)",
    )
    parser.add_argument("--csv", default=None, help="also write the per-run statistics here")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where datasets live, for runs read from a kept checkpoint.pt (default: each run's data_dir)",
    )
    args = parser.parse_args(argv)
    frames, notes = [], []
    for folder in args.runs_dirs:
        if not Path(folder).is_dir():
            print(f"ladarun-queries: error: {folder} is not a folder", file=sys.stderr)
            return 2
        found, left_out = balance_table(folder, args.initial, args.data_dir, args.until)
        frames.append(found)
        notes += left_out
    per_run = pd.concat(frames, ignore_index=True)
    if per_run.empty:
        where = ", ".join(args.runs_dirs)
        print(f"ladarun-queries: error: no run under {where} has its picks", file=sys.stderr)
        for note in notes:
            print(f"  {note}", file=sys.stderr)
        return 2
    print(to_markdown(by_row(per_run)))
    partial = per_run[per_run["status"] != "finished"]
    for _, r in partial.iterrows():
        print(f"unfinished, counted to iteration {r['iterations']} ({r['source']}): {r['path']}")
    if args.csv:
        per_run.to_csv(args.csv, index=False, float_format="%.4f")
        print(f"per-run statistics: {args.csv}")
    if notes:
        print("\nLeft out:")
        for note in notes:
            print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
