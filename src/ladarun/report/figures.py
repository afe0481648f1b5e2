"""``ladarun-figures``: the paper's Figure 3 and Figure 6a from a folder of runs, as PNG and PDF.

- ``<section>/<dataset>_accuracy.{png,pdf}`` (Figure 3): test accuracy against the number of
  labeled examples, one panel per Table 1 group (Baselines, Entropy-based, VAAL-based,
  VarRatio-based; rows outside Table 1 in an "Other" panel), panels sharing the y axis. Each
  panel draws Random as the dashed black reference curve and each of its group's rows in its own
  colour: the mean over seeds with a ± one sample standard deviation band (ddof=1; no band for a
  single seed). Ablations (a row run with a non-default setting, as ``ladarun-table`` labels
  them) are left out unless ``--ablations``; then they are dotted, in their row's panel.
- ``<section>/<dataset>_<acquisition>_virtual_score.{png,pdf}`` (Figure 6a): the acquisition
  score of the virtual instances (metrics.csv ``virtual_score``, written by infomixup,
  infomixup_fixed and manifold_mixup) over the iterations, one line per augmentation and setting
  (LADA rows solid, the others dashed; ablations included, dotted: they are variants of the augmentation).

Every usable run counts, finished or not (a curve's mean at a point is over the seeds that
reached it); runs are grouped exactly as in ``ladarun-table``. Only the figures are written.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, cast

import matplotlib
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

from .rows import GROUPS, OTHER_GROUP, position
from .runs import curve_stats
from .table import DATASET_LABELS, AggregateError, aggregate

VIRTUAL_SCORE = "virtual_score"
REFERENCE = "random"  # the Table 1 row drawn in every accuracy panel as the reference curve
REFERENCE_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1.6}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().removeprefix("protocol ")).strip("_")


def _legend(label: str) -> str:
    """LADA_EntMix^fixed as LADA with sub- and superscript (matplotlib mathtext)."""
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?", label.split(" [")[0])
    if not m:
        return label
    tex = rf"LADA$_{{\mathrm{{{m.group(1)}}}}}" + (r"^{\mathrm{fixed}}" if m.group(2) else "") + "$"
    return tex + label[len(m.group(0)) :]


def _entry(label: str, seeds: int) -> str:
    return f"{_legend(label)} ({seeds} seed{'' if seeds == 1 else 's'})"


def _by_row(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs grouped by table label, in Table 1's row order (a row's ablations after it)."""
    return sorted(
        runs.groupby("label"),
        key=lambda kv: (position(kv[1]["row"].iloc[0]), bool(kv[1]["is_variant"].iloc[0]), kv[0]),
    )


# Distinct colours within a panel (a Table 1 group has at most 7 rows besides Random); the
# virtual-score figure uses the same cycle. Black is kept for the Random reference.
# tab10 is a ListedColormap whose .colors are RGB tuples (the stubs type it as any Colormap / ArrayLike).
_TAB10 = cast(
    Sequence[tuple[float, float, float]], cast(ListedColormap, matplotlib.colormaps["tab10"]).colors
)
COLORS = [c for i, c in enumerate(_TAB10) if i != 7]  # tab10 without its grey


def _plot(ax, stats: pd.DataFrame, x: str, label: str, index: int = 0, **style) -> None:
    style = {"color": COLORS[index % len(COLORS)], "linestyle": "-", "linewidth": 1.5, **style}
    (line,) = ax.plot(stats[x], stats["mean"], label=label, **style)
    band = stats.dropna(subset=["std"])
    if len(band):
        ax.fill_between(
            band[x],
            band["mean"] - band["std"],
            band["mean"] + band["std"],
            color=line.get_color(),
            alpha=0.12,
            linewidth=0,
        )


def _save(fig: Figure, path: Path) -> list[Path]:
    """The figure as ``path`` (PNG) and the same name with .pdf beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pdf = path.with_suffix(".pdf")
    # no date: reruns give the same file
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    return [path, pdf]


def _panels(part: pd.DataFrame) -> list[str]:
    """The groups with rows to draw, in Table 1's order (Random alone makes no panel)."""
    present = set(part.loc[part["row"] != REFERENCE, "group"]) | (
        {"Baselines"} if (part["row"] == REFERENCE).all() else set()
    )
    return [g for g in GROUPS + (OTHER_GROUP,) if g in present]


def accuracy_figure(part: pd.DataFrame, title: str) -> Figure:
    """Figure 3 for one section and dataset: one panel per Table 1 group (see the module doc)."""
    groups = _panels(part)
    cols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(5.6 * cols, 4.2 * nrows))
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
    reference = part[(part["row"] == REFERENCE) & ~part["is_variant"]]
    ref_stats = (
        curve_stats([r.metrics for r in reference["run"]], "n_labeled", "test_acc")
        if len(reference)
        else None
    )
    for ax, group in zip(axes, groups):
        if ref_stats is not None:
            _plot(ax, ref_stats, "n_labeled", _entry("Random", len(reference)), **REFERENCE_STYLE)
        rows = part[(part["group"] == group) & (part["row"] != REFERENCE)]
        colors: dict[str, int] = {}
        for label, cell in _by_row(rows):
            row = cell["row"].iloc[0]
            index = (
                colors.setdefault(row, len(colors))
                if not cell["is_variant"].iloc[0]
                else colors.get(row, len(colors))
            )
            stats = curve_stats([r.metrics for r in cell["run"]], "n_labeled", "test_acc")
            style = {"linestyle": ":", "linewidth": 1.8} if cell["is_variant"].iloc[0] else {}
            _plot(ax, stats, "n_labeled", _entry(label, len(cell)), index, **style)
        ax.set(title=group, xlabel="number of labeled examples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    for ax in axes[::cols]:
        ax.set_ylabel("test accuracy (%)")
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def write_figures(
    root: Path | str, out: Optional[Path | str] = None, ablations: bool = False
) -> list[Path]:
    """Write every figure the runs under ``root`` allow; returns the paths (each PNG, then its PDF)."""
    root = Path(root)
    out = Path(out) if out is not None else root / "figures"
    agg = aggregate(root)
    written: list[Path] = []
    table = agg.table[[r.metrics is not None and len(r.metrics) > 0 for r in agg.table["run"]]]
    for (sid, dataset), part in table.groupby(["section", "dataset"], sort=False):
        folder = out / _slug(agg.sections[sid])
        name = DATASET_LABELS.get(dataset, dataset)

        shown = part if ablations else part[~part["is_variant"]]
        if len(shown):
            fig = accuracy_figure(
                shown, f"{name}: test accuracy over acquisition ({agg.sections[sid]})"
            )
            written += _save(fig, folder / f"{dataset}_accuracy.png")

        scored = part[
            [
                VIRTUAL_SCORE in r.metrics and r.metrics[VIRTUAL_SCORE].notna().any()
                for r in part["run"]
            ]
        ]
        for acquisition, runs in scored.groupby(scored["run"].map(lambda r: r.row.acquisition)):
            fig = Figure(figsize=(6.4, 4.4))
            ax = fig.add_subplot()
            for i, (label, cell) in enumerate(_by_row(runs)):
                frames = [r.metrics[r.metrics["iteration"] >= 1] for r in cell["run"]]
                style = (
                    ":" if cell["is_variant"].iloc[0] else "-" if label.startswith("LADA") else "--"
                )
                _plot(
                    ax,
                    curve_stats(frames, "iteration", VIRTUAL_SCORE),
                    "iteration",
                    _entry(label, len(cell)),
                    i,
                    linestyle=style,
                )
            ax.set(
                xlabel="acquisition iteration",
                ylabel=f"{VIRTUAL_SCORE} (acquisition score of virtual instances)",
                title=f"{name}, {acquisition}: virtual instances ({agg.sections[sid]})",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            written += _save(fig, folder / f"{dataset}_{acquisition}_virtual_score.png")
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-figures",
        description="Write the paper's Figure 3 (accuracy vs labels, one panel per Table 1 group) and Figure 6a "
        "(virtual-instance score) as PNG and PDF.",
    )
    parser.add_argument(
        "runs_dir", nargs="?", default="outputs", help="folder searched for runs (default: outputs)"
    )
    parser.add_argument(
        "--out", default=None, help="where the figures go (default: RUNS_DIR/figures)"
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also draw ablations (rows run with a non-default setting) in the accuracy figure, dotted",
    )
    args = parser.parse_args(argv)
    try:
        written = write_figures(args.runs_dir, args.out, ablations=args.ablations)
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
