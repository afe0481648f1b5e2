"""``ladarun-figures``: the paper's Figure 3 and Figure 6a from a folder of runs, as PNGs.

- ``<section>/<dataset>_accuracy.png`` (Figure 3): test accuracy against the number of
  labeled examples, one line per Table 1 row, the mean over seeds with a ± one sample
  standard deviation band (ddof=1; no band for a single seed).
- ``<section>/<dataset>_<acquisition>_virtual_score.png`` (Figure 6a): the acquisition score
  of the virtual instances (metrics.csv ``virtual_score``, written by infomixup,
  infomixup_fixed and manifold_mixup) over the iterations, one line per augmentation.

Every usable run counts, finished or not (a curve's mean at a point is over the seeds that
reached it); runs are grouped exactly as in ``ladarun-table``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

from .aggregate import DATASET_LABELS, AggregateError, aggregate
from .table1 import position

VIRTUAL_SCORE = "virtual_score"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().removeprefix("protocol ")).strip("_")


def _legend(label: str) -> str:
    """LADA_EntMix^fixed as LADA with sub- and superscript (matplotlib mathtext)."""
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?", label.split(" [")[0])
    if not m:
        return label
    tex = rf"LADA$_{{\mathrm{{{m.group(1)}}}}}" + (r"^{\mathrm{fixed}}" if m.group(2) else "") + "$"
    return tex + label[len(m.group(0)):]


def _entry(label: str, seeds: int) -> str:
    return f"{_legend(label)} ({seeds} seed{'' if seeds == 1 else 's'})"


def _by_row(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs grouped by table label, in Table 1's row order."""
    return sorted(runs.groupby("label"), key=lambda kv: (position(kv[1]["row"].iloc[0]), kv[0]))


def _mean_std(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Mean, sample std and count of ``y`` over runs at each value of ``x``."""
    stacked = pd.concat([f[[x, y]].dropna() for f in frames])
    return stacked.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()


# Table 1 has 18 rows: tab20 gives each its own colour (the default cycle repeats after 10);
# LADA rows are solid, the others dashed.
COLORS = matplotlib.colormaps["tab20"].colors


def _plot(ax, stats: pd.DataFrame, x: str, label: str, index: int = 0, many: bool = False) -> None:
    style = "-" if label.startswith("LADA") else "--"
    (line,) = ax.plot(stats[x], stats["mean"], style, label=label, linewidth=1.5, color=COLORS[index % len(COLORS)])
    band = stats.dropna(subset=["std"])
    if len(band):
        ax.fill_between(band[x], band["mean"] - band["std"], band["mean"] + band["std"], color=line.get_color(),
                        alpha=0.08 if many else 0.2)


def _legend_box(fig: Figure, ax, n: int) -> None:
    """Up to 6 entries inside the axes; more go to a column right of it, off the curves."""
    if n <= 6:
        ax.legend(fontsize="small")
    else:
        fig.set_size_inches(9.6, 4.8)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_figures(root: Path | str, out: Optional[Path | str] = None) -> list[Path]:
    """Write every figure the runs under ``root`` allow; returns the PNG paths."""
    root = Path(root)
    out = Path(out) if out is not None else root / "figures"
    agg = aggregate(root)
    written: list[Path] = []
    table = agg.table[[r.metrics is not None and len(r.metrics) > 0 for r in agg.table["run"]]]
    for (sid, dataset), part in table.groupby(["section", "dataset"], sort=False):
        folder = out / _slug(agg.sections[sid])
        name = DATASET_LABELS.get(dataset, dataset)

        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_subplot()
        cells = _by_row(part)
        for i, (label, cell) in enumerate(cells):
            stats = _mean_std([r.metrics for r in cell["run"]], "n_labeled", "test_acc")
            _plot(ax, stats, "n_labeled", _entry(label, len(cell)), i, many=len(cells) > 6)
        ax.set(xlabel="labeled examples", ylabel="test accuracy (%)", title=f"{name}: {agg.sections[sid]}")
        ax.grid(alpha=0.3)
        _legend_box(fig, ax, len(cells))
        written.append(_save(fig, folder / f"{dataset}_accuracy.png"))

        scored = part[[VIRTUAL_SCORE in r.metrics and r.metrics[VIRTUAL_SCORE].notna().any() for r in part["run"]]]
        for acquisition, runs in scored.groupby(scored["run"].map(lambda r: r.row.acquisition)):
            fig = Figure(figsize=(6.4, 4.4))
            ax = fig.add_subplot()
            for i, (label, cell) in enumerate(_by_row(runs)):
                frames = [r.metrics[r.metrics["iteration"] >= 1] for r in cell["run"]]
                _plot(ax, _mean_std(frames, "iteration", VIRTUAL_SCORE), "iteration", _entry(label, len(cell)), i)
            ax.set(xlabel="acquisition iteration", ylabel=f"{VIRTUAL_SCORE} (acquisition score of virtual instances)",
                   title=f"{name}, {acquisition}: virtual instances ({agg.sections[sid]})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            written.append(_save(fig, folder / f"{dataset}_{acquisition}_virtual_score.png"))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-figures",
        description="Write the paper's Figure 3 (accuracy vs labels) and Figure 6a (virtual-instance score) as PNGs.",
    )
    parser.add_argument("runs_dir", nargs="?", default="outputs", help="folder searched for runs (default: outputs)")
    parser.add_argument("--out", default=None, help="where the PNGs go (default: RUNS_DIR/figures)")
    args = parser.parse_args(argv)
    try:
        written = write_figures(args.runs_dir, args.out)
    except AggregateError as err:
        print(f"ladarun-figures: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    if not any(p.name.endswith(f"_{VIRTUAL_SCORE}.png") for p in written):
        print(
            f"ladarun-figures: no run has a {VIRTUAL_SCORE} column (augment=infomixup, infomixup_fixed or "
            "manifold_mixup), so Figure 6a was not drawn",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
