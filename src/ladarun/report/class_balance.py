"""``ladarun-queries``: the class balance of the points each run picked (its queries.csv).

Per run: how many points the acquisitions picked (iterations 1..N; ``--initial`` adds the
initial set), how many classes they cover, the entropy of their class histogram (in bits, and
as a share of the most even split, 1.0 = as many picks of every class) and the shares of the
least and most picked class. Per protocol section, dataset and Table 1 row (as ``ladarun-table``
groups runs: protocols are never averaged together): the mean ± std of those over seeds, each
seed counted once however many folders hold it.

A run without queries.csv (finished before the file existed) can still be read from a kept
checkpoint.pt (``keep_checkpoint=true``), whose ``labeled_at`` says which points were labeled
when; the labels then come from the dataset, read from ``--data-dir`` (default: the run's own
``data_dir``). The checkpoint is read with ``torch.load(weights_only=True)``: no code in it runs.
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
from .cells import AggregateError, aggregate
from .paths import output_file, runs_folder
from .rows import position
from .runs import Run

STATS = ("picks", "classes", "entropy_bits", "balance", "min_share", "max_share")
KEYS = ["section_id", "dataset", "row", "seed"]


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


def _safe_load(path: Path) -> dict[str, Any]:
    """checkpoint.pt through torch's weights-only unpickler: tensors, containers, numbers and the
    NumPy arrays of the saved RNG states; anything else is refused, so no code in it runs."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    numpy_rng = [np.ndarray, np.dtype, core.multiarray._reconstruct, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(numpy_rng):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not isinstance(state.get("labeled_at"), torch.Tensor):
        raise ValueError("it holds no labeled_at tensor")
    return state


def picks_from_checkpoint(run: Run, data_dir: Optional[str]) -> pd.DataFrame:
    """index/label/iteration of every labeled point, from checkpoint.pt's ``labeled_at`` and the
    dataset's labels (the dataset is loaded as the run loaded it)."""
    import torch
    from omegaconf import OmegaConf

    from ..config import build  # the one place that builds config nodes (Hydra's instantiate)

    labeled_at = _safe_load(run.path / "checkpoint.pt")["labeled_at"].cpu()
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
        try:
            picks = pd.read_csv(run.path / QUERIES)
            picks = picks[["index", "label", "iteration"]].apply(pd.to_numeric, errors="raise")
        except (ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            return (
                None,
                f"{QUERIES} cannot be read ({err}); restore it, or rerun the run in a new folder",
            )
        if picks.empty:
            return None, f"{QUERIES} holds no picks; rerun the run in a new folder, or delete it"
        return picks.astype("int64"), QUERIES
    if run.checkpoint:
        try:
            return picks_from_checkpoint(run, data_dir), "checkpoint.pt"
        except LadarunError as err:  # the dataset's files are not there
            return None, f"checkpoint.pt, but its labels cannot be read: {err}"
        except Exception as err:  # torch's safe unpickler raises many kinds on a foreign file
            return (
                None,
                f"checkpoint.pt cannot be read safely ({type(err).__name__}: {err}); delete it",
            )
    return None, f"no {QUERIES} (the run predates it) and no checkpoint.pt to derive the picks from"


def _record(
    run: Run, picks: pd.DataFrame, source: str, initial: bool, until: Optional[int]
) -> dict:
    # every class is in the initial set (protocol.initial_per_class of each)
    num_classes = int(picks["label"].max()) + 1
    chosen = picks if initial else picks[picks["iteration"] > 0]
    if until is not None:
        chosen = chosen[chosen["iteration"] <= until]
    return {
        "iterations": int(picks["iteration"].max()),
        "status": run.status,
        "source": source,
        **class_balance(chosen["label"].tolist(), num_classes),
        "path": str(run.path),
    }


def _folder_table(
    root: Path, initial: bool, data_dir: Optional[str], until: Optional[int]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per run of one folder that has its picks, and one note per run left out."""
    agg = aggregate(root)
    notes = agg.left_out()
    records = []
    for _, where in agg.table.iterrows():
        run = where["run"]
        picks, source = run_picks(run, data_dir)
        if picks is None:
            notes.append(f"{run.path}: {source}")
            continue
        ident = {
            "section_id": where["section"],
            "section": agg.sections[where["section"]],
            "dataset": run.dataset,
            "row": where["label"],
            "seed": run.seed,
            "order": (position(where["row"]), bool(where["is_variant"])),
        }
        records.append({**ident, **_record(run, picks, source, initial, until)})
    return records, notes


def balance_table(
    roots: Path | str | Sequence[Path | str],
    initial: bool = False,
    data_dir: Optional[str] = None,
    until: Optional[int] = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row of balance statistics per run under ``roots``, and a note per run left out.

    A seed of a row in one protocol section is counted once: the first copy with its picks, in
    the order the folders are given. ``until``: count only the picks of iterations up to this
    one, to compare runs at one budget (an unfinished run against finished ones).
    """
    folders = [roots] if isinstance(roots, (str, Path)) else list(roots)
    records, notes = [], []
    for folder in folders:
        found, said = _folder_table(Path(folder), initial, data_dir, until)
        records += found
        notes += said
    per_run = pd.DataFrame.from_records(records)
    if per_run.empty:
        return per_run, notes
    twice = per_run.duplicated(KEYS)
    for _, r in per_run[twice].iterrows():
        first = per_run[(per_run[KEYS] == r[KEYS]).all(axis=1)].iloc[0]
        notes.append(
            f"{r['path']}: seed {r['seed']} of {r['row']} ({r['section']}) is counted once, from {first['path']}"
        )
    return per_run[~twice].reset_index(drop=True), notes


def by_row(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each statistic, per protocol section, dataset and row."""
    ordered = per_run.sort_values(["section", "dataset", "order", "row"], kind="stable")
    grouped = ordered.groupby(["section", "dataset", "row"], sort=False)
    out = grouped[list(STATS)].agg(["mean", "std"])
    out.columns = [f"{stat}_{how}" for stat, how in out.columns]
    out.insert(0, "seeds", grouped.size())
    return out.reset_index()


def _pm(r: pd.Series, stat: str, fmt: str = "{:.2f}") -> str:
    std = r[f"{stat}_std"]
    return fmt.format(r[f"{stat}_mean"]) + ("" if pd.isna(std) else " ± " + fmt.format(std))


def to_markdown(per_row: pd.DataFrame) -> str:
    out = pd.DataFrame(
        {
            "section": per_row["section"],
            "dataset": per_row["dataset"],
            "row": per_row["row"],
            "seeds": per_row["seeds"].astype(str),
            "picks": [_pm(r, "picks", "{:.0f}") for _, r in per_row.iterrows()],
            "classes": [_pm(r, "classes", "{:.1f}") for _, r in per_row.iterrows()],
            "entropy (bits)": [_pm(r, "entropy_bits") for _, r in per_row.iterrows()],
            "balance": [_pm(r, "balance") for _, r in per_row.iterrows()],
            "min share": [_pm(r, "min_share") for _, r in per_row.iterrows()],
            "max share": [_pm(r, "max_share") for _, r in per_row.iterrows()],
        }
    )
    return out.to_markdown(index=False, disable_numparse=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ladarun-queries",
        description="The class balance of each run's picks (queries.csv), per run and per Table 1 row.",
    )
    p.add_argument(
        "runs_dirs",
        nargs="*",
        default=["outputs"],
        metavar="RUNS_DIR",
        help="folders searched for runs, read together (default: outputs)",
    )
    p.add_argument("--initial", action="store_true", help="count the initial labeled set too")
    p.add_argument(
        "--until",
        type=int,
        default=None,
        metavar="N",
        help="count only the picks of iterations 1..N (to compare runs at one budget)",
    )
    p.add_argument("--csv", default=None, help="also write the per-run statistics here")
    p.add_argument(
        "--data-dir",
        default=None,
        help="where datasets live, for runs read from a kept checkpoint.pt (default: each run's data_dir)",
    )
    return p


def _problem(args: argparse.Namespace) -> Optional[str]:
    for folder in args.runs_dirs:
        if runs_folder(Path(folder)):
            return runs_folder(Path(folder))
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        return (
            f"--data-dir {args.data_dir} is not a folder; give the folder that holds the datasets"
        )
    return output_file(Path(args.csv), "--csv") if args.csv else None


def _report(per_run: pd.DataFrame, notes: list[str], csv: Optional[str]) -> None:
    print(to_markdown(by_row(per_run)))
    partial = per_run[per_run["status"] != "finished"]
    for _, r in partial.iterrows():
        print(f"unfinished, counted to iteration {r['iterations']} ({r['source']}): {r['path']}")
    if csv:
        per_run.drop(columns=["section_id", "order"]).to_csv(csv, index=False, float_format="%.4f")
        print(f"per-run statistics: {csv}")
    if notes:
        print("\nLeft out:")
        for note in notes:
            print(f"- {note}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    problem = _problem(args)
    if problem:
        print(f"ladarun-queries: error: {problem}", file=sys.stderr)
        return 2
    try:
        per_run, notes = balance_table(args.runs_dirs, args.initial, args.data_dir, args.until)
    except AggregateError as err:
        print(f"ladarun-queries: error: {err}", file=sys.stderr)
        return 2
    if per_run.empty:
        where = ", ".join(args.runs_dirs)
        print(f"ladarun-queries: error: no run under {where} has its picks", file=sys.stderr)
        for note in notes:
            print(f"  {note}", file=sys.stderr)
        return 2
    try:
        _report(per_run, notes, args.csv)
    except OSError as err:
        print(
            f"ladarun-queries: error: cannot write {args.csv} ({err.strerror or err})",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
