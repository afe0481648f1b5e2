"""``ladarun-figures``: the paper's Figure 3 and Figure 6a from a folder of runs, as PNG and PDF,
sized to print 6.5 inches wide with no text under 8 pt.

- ``<section>/<dataset>_accuracy`` (Figure 3): test accuracy against the number of labeled
  examples, one panel per Table 1 group, panels sharing the y axis. Every panel draws Random as
  the dashed black reference and each of its group's rows: the mean over seeds with a ± one
  sample standard deviation band (ddof=1; none for a single seed).
- ``<section>/<dataset>_difference``: each row's mean accuracy minus Random's at every label
  count, with its pointwise 95 % confidence band (Welch, as ``ladarun-compare``), one panel
  per group: the differences the table claims, on a scale that shows them.
- ``<section>/<dataset>_<acquisition>_virtual_score`` (Figure 6a): the acquisition score of the
  virtual instances (metrics.csv ``virtual_score``) over the iterations, one line per
  augmentation (LADA rows solid, the others dashed).

A method has one colour in every panel and figure of a folder; ablations (``--ablations``) are
dotted in their row's colour. An odd number of panels gives the last one the full width, so no
panel is empty. Every usable run counts, finished or not (a mean at a point is over the seeds
that reached it); runs are grouped as in ``ladarun-table``. Only the figures are written.
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

from .cells import Aggregate, AggregateError, aggregate
from .paths import output_folder, runs_folder
from .rows import GROUPS, OTHER_GROUP, position
from .runs import Run, curve_stats
from .stats import welch

VIRTUAL_SCORE = "virtual_score"
REFERENCE = "random"  # the Table 1 row drawn in every accuracy panel as the reference curve
REFERENCE_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1.4}
WIDTH = 6.5  # inches: the figures print at this width with every font at 8 pt or more
# Any: matplotlib types rc_context's keys as literals, which a dict of str does not satisfy
FONTS: Any = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 9,
}
DATASET_WORDS = {
    "fashion": "Fashion-MNIST",
    "svhn": "SVHN",
    "cifar10": "CIFAR-10",
    "digits": "8×8 digits",
}
MODEL_WORDS = {"cnn": "a small CNN", "resnet18": "ResNet-18"}


# tab10 without its grey; black is kept for Random.
_TAB10 = cast(Sequence, cast(ListedColormap, matplotlib.colormaps["tab10"]).colors)
COLOURS = [c for i, c in enumerate(_TAB10) if i != 7]


def method_styles(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """One style per row key (``runs``: a ``row`` and a ``group`` column), used in every panel and
    figure: a row's colour is its place among its group's rows in Table 1's order, so the rows of
    a panel never share a colour; past the palette's nine colours, rows are dash-dotted."""
    out = {REFERENCE: dict(REFERENCE_STYLE)}
    pairs = runs.loc[runs["row"] != REFERENCE, ["group", "row"]].drop_duplicates()
    for _, part in pairs.groupby("group"):
        keys = sorted(part["row"], key=lambda k: (position(k), k))
        for i, key in enumerate(keys):
            style = "-" if i < len(COLOURS) else "-."
            out[key] = {"color": COLOURS[i % len(COLOURS)], "linestyle": style, "linewidth": 1.4}
    return out


def legend_label(label: str) -> str:
    """LADA_EntMix^fixed as LADA with sub- and superscript (matplotlib mathtext)."""
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?", label.split(" [")[0])
    if not m:
        return label
    tex = rf"LADA$_{{\mathrm{{{m.group(1)}}}}}" + (r"^{\mathrm{fixed}}" if m.group(2) else "") + "$"
    return tex + label[len(m.group(0)) :]


def _entry(label: str, seeds: int) -> str:
    return f"{legend_label(label)} ({seeds} seed{'' if seeds == 1 else 's'})"


def section_words(run: Run, dataset: str) -> str:
    """A section in words, from its runs' protocol and model: "Fashion-MNIST, 100 rounds of 10
    labels after 2 per class, 5 epochs a round, a small CNN"."""
    p, model = run.protocol, (run.config.get("model") or {}).get("name", "?")
    rounds = f"{p.get('iterations', '?')} rounds of {p.get('query', '?')} labels"
    start = f"after {p['initial_per_class']} per class" if "initial_per_class" in p else ""
    epochs = f"{p['epochs']} epochs a round" if "epochs" in p else ""
    parts = [DATASET_WORDS.get(dataset, dataset), " ".join(filter(None, [rounds, start])), epochs]
    return ", ".join(filter(None, parts + [MODEL_WORDS.get(model, model)]))


def _by_row(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs grouped by table label, in Table 1's row order (a row's ablations after it)."""
    return sorted(
        runs.groupby("label"),
        key=lambda kv: (position(kv[1]["row"].iloc[0]), bool(kv[1]["is_variant"].iloc[0]), kv[0]),
    )


def _style(cell: pd.DataFrame, styles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    style = dict(styles[cell["row"].iloc[0]])
    return {**style, "linestyle": ":", "linewidth": 1.6} if cell["is_variant"].iloc[0] else style


def _plot(ax, stats: pd.DataFrame, x: str, label: str, low: str, high: str, style: dict) -> None:
    (line,) = ax.plot(stats[x], stats["mean"], label=label, **style)
    band = stats.dropna(subset=[low, high])
    if len(band):
        ax.fill_between(band[x], band[low], band[high], color=line.get_color(), alpha=0.13, lw=0)


def _spread(stats: pd.DataFrame) -> pd.DataFrame:
    return stats.assign(low=stats["mean"] - stats["std"], high=stats["mean"] + stats["std"])


def _groups(part: pd.DataFrame, with_reference: bool) -> list[str]:
    """The groups with rows to draw, in Table 1's order, then groups outside it, then Other."""
    present = set(part.loc[part["row"] != REFERENCE, "group"])
    if with_reference and (part["row"] == REFERENCE).all():
        present.add(GROUPS[0])
    known = [g for g in GROUPS if g in present]
    return (
        known
        + sorted(present - set(GROUPS) - {OTHER_GROUP})
        + [g for g in [OTHER_GROUP] if g in present]
    )


def _axes(fig: Figure, panels: int, share: bool = True) -> list:
    """``panels`` axes in two columns (sharing y when ``share``); an odd last panel spans both
    columns."""
    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    grid = fig.add_gridspec(rows, 2 * cols)
    axes: list[Any] = []
    for i in range(panels):
        r, c = divmod(i, cols)
        span = (
            slice(0, 2 * cols)
            if (i == panels - 1 and panels % 2 and cols == 2)
            else slice(2 * c, 2 * c + 2)
        )
        axes.append(fig.add_subplot(grid[r, span], sharey=axes[0] if axes and share else None))
    return axes


def _figure(panels: int, height: float) -> Figure:
    return Figure(figsize=(WIDTH, height * math.ceil(panels / 2) + 0.5), layout="constrained")


def _legends(axes: Sequence, where: str) -> str:
    """A legend in every panel: colours name methods within a panel (a method keeps its colour in
    every figure; rows of different groups may share one). Where every entry has the same seed
    count, the entries drop it and it is returned for the title ("5 seeds each")."""
    entries = [ax.get_legend_handles_labels() for ax in axes]
    counts = {m.group(1) for _, labels in entries for x in labels if (m := SEEDS.search(x))}
    same = len(counts) == 1 and all(
        SEEDS.search(x) for _, labels in entries for x in labels if x != "Random"
    )
    for ax, (handles, labels) in zip(axes, entries):
        labels = [SEEDS.sub("", x) for x in labels] if same else labels
        ax.legend(
            handles, labels, loc=where, ncol=2 if len(labels) > 5 else 1, handlelength=1.6,
            borderaxespad=0.3, labelspacing=0.25, columnspacing=0.8,
        )  # fmt: skip
    return f"{counts.pop()} seeds each" if same else ""


def _label(fig: Figure, axes: Sequence, ylabel: str, where: str, title: str) -> None:
    """Axis labels, grid and legends of every panel, and the title (with a shared seed count)."""
    for ax in axes:
        ax.set(xlabel="labeled examples", ylabel=ylabel)
        ax.grid(alpha=0.3)
    note = _legends(axes, where)
    fig.suptitle(title + (f" ({note})" if note else ""))


SEEDS = re.compile(r" \((\d+) seeds?\)$")


def accuracy_figure(
    part: pd.DataFrame, title: str, styles: Optional[dict[str, dict[str, Any]]] = None
) -> Figure:
    """Figure 3 for one section and dataset: one panel per Table 1 group (see the module doc)."""
    styles = styles or method_styles(part)
    groups = _groups(part, with_reference=True)
    with matplotlib.rc_context(FONTS):
        fig = _figure(len(groups), 2.9)
        axes = _axes(fig, len(groups))
        reference = part[(part["row"] == REFERENCE) & ~part["is_variant"]]
        for ax, group in zip(axes, groups):
            if len(reference):
                stats = curve_stats([r.metrics for r in reference["run"]], "n_labeled", "test_acc")
                _plot(
                    ax,
                    _spread(stats),
                    "n_labeled",
                    _entry("Random", len(reference)),
                    "low",
                    "high",
                    styles[REFERENCE],
                )
            for label, cell in _by_row(part[(part["group"] == group) & (part["row"] != REFERENCE)]):
                stats = curve_stats([r.metrics for r in cell["run"]], "n_labeled", "test_acc")
                _plot(
                    ax,
                    _spread(stats),
                    "n_labeled",
                    _entry(label, len(cell)),
                    "low",
                    "high",
                    _style(cell, styles),
                )
            ax.set(title=group)
        what = "test accuracy, mean ± one standard deviation over seeds"
        _label(fig, axes, "test accuracy (%)", "lower right", f"{title}\n{what}")
    return fig


def difference_stats(runs: Sequence[Run], reference: Sequence[Run]) -> pd.DataFrame:
    """mean(runs) − mean(reference) at every label count both reached, with its 95 % Welch CI."""

    def values(group: Sequence[Run]) -> pd.Series:
        frame = pd.concat(
            [r.metrics[["n_labeled", "test_acc"]] for r in group if r.metrics is not None]
        )
        return frame.groupby("n_labeled")["test_acc"].agg(list)

    a, b = values(runs), values(reference)
    rows = []
    for x in a.index.intersection(b.index):
        d = welch(a[x], b[x])
        rows.append({"n_labeled": x, "mean": d.diff, "low": d.low, "high": d.high})
    return pd.DataFrame(rows, columns=["n_labeled", "mean", "low", "high"])


def difference_figure(
    part: pd.DataFrame, title: str, styles: dict[str, dict[str, Any]]
) -> Optional[Figure]:
    """Each row's accuracy minus Random's with its 95 % band, a panel per group (None: no Random,
    or no other row)."""
    reference = part[(part["row"] == REFERENCE) & ~part["is_variant"]]
    groups = _groups(part, with_reference=False)
    if not len(reference) or not groups:
        return None
    with matplotlib.rc_context(FONTS):
        fig = _figure(len(groups), 2.7)
        axes = _axes(fig, len(groups), share=False)
        for ax, group in zip(axes, groups):
            ax.axhline(0, **{**styles[REFERENCE], "label": "Random"})
            means = [0.0]
            for label, cell in _by_row(part[(part["group"] == group) & (part["row"] != REFERENCE)]):
                stats = difference_stats(list(cell["run"]), list(reference["run"]))
                entry = _entry(label, len(cell))
                _plot(ax, stats, "n_labeled", entry, "low", "high", _style(cell, styles))
                means += list(stats["mean"])
            # the means set the scale; the early, wide bands of a few seeds run off it
            pad = 0.1 * (max(means) - min(means)) + 0.2
            ax.set_ylim(min(means) - pad, max(means) + pad)
            ax.set(title=group)
        what = "accuracy minus Random's, mean over seeds with its pointwise 95 % confidence band"
        _label(fig, axes, "accuracy − Random (points)", "best", f"{title}\n{what}")
    return fig


def virtual_score_figure(
    runs: pd.DataFrame, title: str, styles: dict[str, dict[str, Any]]
) -> Figure:
    """Figure 6a for one acquisition: the virtual instances' score per iteration."""
    with matplotlib.rc_context(FONTS):
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        ax = fig.add_subplot()
        for label, cell in _by_row(runs):
            frames = [r.metrics[r.metrics["iteration"] >= 1] for r in cell["run"]]
            style = _style(cell, styles)
            if not label.startswith("LADA") and style["linestyle"] == "-":
                style["linestyle"] = "--"
            stats = _spread(curve_stats(frames, "iteration", VIRTUAL_SCORE))
            _plot(ax, stats, "iteration", _entry(label, len(cell)), "low", "high", style)
        ax.set(xlabel="acquisition round", ylabel="score of the virtual instances", title=title)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return fig


def _save(fig: Figure, path: Path) -> list[Path]:
    """The figure as ``path`` (PNG) and the same name with .pdf beside it, both 6.5 inches wide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    pdf = path.with_suffix(".pdf")
    fig.savefig(pdf, metadata={"CreationDate": None})  # no date: reruns give the same file
    return [path, pdf]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().removeprefix("protocol ")).strip("_")


def _acquisition_words(acquisition: str) -> str:
    from .rows import row_for

    return row_for(acquisition, "none").label


def write_figures(
    root: Path | str,
    out: Optional[Path | str] = None,
    ablations: bool = False,
    agg: Optional[Aggregate] = None,
) -> list[Path]:
    """Write every figure the runs under ``root`` allow (``agg``: its runs, already aggregated);
    returns the paths (each PNG, then its PDF)."""
    root = Path(root)
    out = Path(out) if out is not None else root / "figures"
    agg = agg if agg is not None else aggregate(root)
    table = agg.table[[r.metrics is not None and len(r.metrics) > 0 for r in agg.table["run"]]]
    styles = method_styles(table)
    written: list[Path] = []
    for (sid, dataset), part in table.groupby(["section", "dataset"], sort=False):
        folder = out / _slug(agg.sections[sid])
        title = section_words(part["run"].iloc[0], dataset)
        shown = part if ablations else part[~part["is_variant"]]
        if len(shown):
            written += _save(
                accuracy_figure(shown, title, styles), folder / f"{dataset}_accuracy.png"
            )
            diff = difference_figure(shown, title, styles)
            if diff is not None:
                written += _save(diff, folder / f"{dataset}_difference.png")
        scored = part[
            [
                VIRTUAL_SCORE in r.metrics and r.metrics[VIRTUAL_SCORE].notna().any()
                for r in part["run"]
            ]
        ]
        for acquisition, runs in scored.groupby(scored["run"].map(lambda r: r.row.acquisition)):
            words = _acquisition_words(acquisition)
            name = (
                f"{title}\n{words}: score of the virtual instances, mean ± one standard deviation"
            )
            fig = virtual_score_figure(runs, name, styles)
            written += _save(fig, folder / f"{dataset}_{acquisition}_virtual_score.png")
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-figures",
        description="Write the paper's Figure 3 (accuracy vs labels, one panel per Table 1 group), the "
        "difference to Random with its confidence band, and Figure 6a (virtual-instance score) as PNG and PDF.",
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
        help="also draw ablations (rows run with a non-default setting), dotted",
    )
    args = parser.parse_args(argv)
    problem = runs_folder(Path(args.runs_dir)) or (
        args.out and output_folder(Path(args.out), "--out")
    )
    try:
        if problem:
            raise AggregateError(problem)
        agg = aggregate(args.runs_dir)
        for line in agg.left_out():
            print(f"ladarun-figures: left out: {line}", file=sys.stderr)
        written = write_figures(args.runs_dir, args.out, ablations=args.ablations, agg=agg)
    except AggregateError as err:
        print(f"ladarun-figures: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"ladarun-figures: error: cannot write the figures ({err}); give --out a writable folder",
            file=sys.stderr,
        )
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
