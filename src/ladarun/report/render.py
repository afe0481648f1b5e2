"""Table 1 as Markdown, CSV and LaTeX, from the cells of :mod:`.cells`.

Each section and dataset is one pandas DataFrame of formatted cells, written by pandas
(``DataFrame.to_markdown``, ``Styler.to_latex``); the bold rule and its simulated error rates
are stated in the caption.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..rundir.lock import running_owner
from .cells import BOLD_METRICS, Aggregate
from .notes import dataset_label
from .runs import Run
from .stats import ALPHA, NULL_DRAWS, NULL_RATES, NULL_SEEDS

BEST = "Best (test-selected)"
#: The test accuracy at each run's best validation iteration (protocol.val_size > 0 only).
BEST_VAL = "Best (val-selected)"


def _rates() -> str:
    sizes = list(NULL_RATES)
    return (
        ", ".join(f"{100 * NULL_RATES[k]:.2f} %" for k in sizes)
        + " of groups of "
        + ", ".join(map(str, sizes[:-1]))
        + f" and {sizes[-1]} rows"
    )


BOLD_RULE = (
    "Bold, in Final and in Area separately, within each group of two or more rows with results: "
    "every row not significantly worse than the row with the best mean, by two-sided Welch t-tests on "
    "the per-seed values between every pair of rows in the group, Holm-corrected over those pairs, at "
    f"{ALPHA:g} (the best row is picked after seeing the data, so its own comparisons alone would not "
    f"hold the error rate). Simulated with equal true means ({NULL_DRAWS:,} draws, {NULL_SEEDS} seeds a "
    f"row, the committed tables' spreads), it marks a row wrongly in {_rates()}. A row with one seed "
    "cannot be tested and is never significantly worse."
)
CAPTION = (
    "Final = test accuracy after the last iteration; Area = area under the learning curve, the mean "
    "test accuracy over iterations 0..N (both from metrics.csv; the primary columns); "
    f"{BEST} = the best test accuracy seen during a run, the paper's metric, which selects on the "
    "test set (for comparison with the paper; never bold); each mean ± sample standard deviation "
    "(ddof=1) over seeds; n = finished seeds (+k: unfinished runs, not averaged). Time = mean wall "
    "time of a whole iteration (acquisition, training and test; iterations ≥ 1) relative to Random's "
    "on the same dataset, protocol and CPU model (summary.json's cpu; blank where the row and Random "
    "did not run on one recorded CPU model, see Notes); Acq. time = the same ratio for the acquisition "
    "step alone (Random's acquisition is a random draw of about a millisecond, so these ratios are "
    "large). Param = parameters of the auxiliary network (- = none). "
    + BOLD_RULE
    + " Ablations (a row run with a non-default setting, labelled [key=value]) are listed in their own "
    "section and never bold. Groups whose rows have different seed counts are listed under Notes."
)
VAL_CAPTION = (
    f" {BEST_VAL} (runs that held out a validation set, protocol.val_size > 0) = the test accuracy "
    "at each run's best validation iteration: model selection without the test set; never bold."
)
PAPER_CAPTION = (
    " Paper: the paper's Table 1 (mean ± std over 5 seeds, measured under its protocol: ResNet-18, "
    f"100 iterations, 50 epochs each), Δ = our {BEST} mean − the paper's; Paper Time is its "
    "acquisition-time ratio."
)


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _acc(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.2f} ± {std:.2f}" if not math.isnan(std) else f"{mean:.2f} ± –"


def _param(x: Any) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    x = int(x)
    if x == 0:
        return "-"
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}K" if x >= 1e3 else str(x)


def _rat(x: Any) -> str:
    """A ratio with about three significant digits (acquisition ratios reach the thousands)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def formatted(part: pd.DataFrame, paper: bool, bold: str = "**{}**") -> pd.DataFrame:
    """The cells of one table as text, one row per table row; ``bold`` wraps a bold accuracy."""
    out = pd.DataFrame(index=part.index)
    group = part["group"].where(part["group"] != part["group"].shift(), "")
    out["Group"] = group if not part["is_variant"].any() else part["group"]
    out["Method"] = part["label"]
    for metric, heading in (("final", "Final"), ("area", "Area")):
        accs = [_acc(m, s) for m, s in zip(part[f"{metric}_mean"], part[f"{metric}_std"])]
        marks = part.get(f"bold_{metric}", pd.Series(False, index=part.index))
        out[heading] = [bold.format(a) if b and a else a for a, b in zip(accs, marks)]
    out["n"] = [f"{n}" + (f" (+{u})" if u else "") for n, u in zip(part["n"], part["n_unfinished"])]
    out["Time"] = part["time_ratio"].map(_num)
    out["Acq. time"] = part["acq_ratio"].map(_rat)
    out["Param"] = part["param"].map(_param)
    out[BEST] = [_acc(m, s) for m, s in zip(part["best_mean"], part["best_std"])]
    if part["best_val_mean"].notna().any():  # runs with protocol.val_size > 0
        out[BEST_VAL] = [_acc(m, s) for m, s in zip(part["best_val_mean"], part["best_val_std"])]
    if paper:
        out["Paper"] = [_acc(m, s) for m, s in zip(part["paper_mean"], part["paper_std"])]
        out["Δ"] = part["diff"].map(lambda x: _num(x, "{:+.2f}"))
        out["Paper Time"] = part["paper_time"].map(_num)
        out["Paper Param"] = part["paper_param"]
    return out.reset_index(drop=True)


def _md(df: pd.DataFrame, numbers: bool = True) -> str:
    """A Markdown table; ``numbers``: every column but Group and Method right-aligned."""
    escaped = df.map(lambda c: str(c).replace("|", "\\|"))
    align = ["left" if c in ("Group", "Method") or not numbers else "right" for c in df.columns]
    return escaped.to_markdown(index=False, disable_numparse=True, colalign=align)


def tables(agg: Aggregate) -> Iterator[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
    """(section id, dataset, rows, ablations) of every table, in the table's order."""
    df = agg.cells
    for sid in df["section"].unique() if len(df) else []:
        sec = df[df["section"] == sid]
        for dataset in sec["dataset"].unique():
            part = sec[sec["dataset"] == dataset]
            yield sid, dataset, part[~part["is_variant"]], part[part["is_variant"]]


def _has_val(agg: Aggregate) -> bool:
    """Whether any run held out a validation set (the Best (val-selected) column is shown)."""
    return bool(len(agg.cells)) and bool(agg.cells["best_val_mean"].notna().any())


def to_markdown(agg: Aggregate, root: Path, paper: bool = False) -> str:
    caption = CAPTION + (VAL_CAPTION if _has_val(agg) else "") + (PAPER_CAPTION if paper else "")
    lines = [f"# Table 1 from {root}", "", caption, ""]
    last = None
    for sid, dataset, main_rows, ablations in tables(agg):
        if sid != last:
            lines += [f"## {agg.sections[sid]}", ""]
            last = sid
        name = dataset_label(dataset)
        lines += [f"### {name}", ""]
        if len(main_rows):
            lines += [_md(formatted(main_rows, paper)), ""]
        if len(ablations):
            lines += [f"#### {name}: ablations (non-default settings; never bold)", ""]
            lines += [_md(formatted(ablations, paper)), ""]
    listed = pd.DataFrame(run_rows(agg, root))
    lines += ["## Unfinished, failed and unusable runs", ""]
    lines += (
        [_md(listed, numbers=False), ""]
        if len(listed)
        else ["None: every run found is finished.", ""]
    )
    if agg.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in agg.notes] + [""]
    return "\n".join(lines)


CSV_COLUMNS = {
    "section": "section",
    "protocol": "protocol",
    "dataset": "dataset",
    "group": "group",
    "row": "row",
    "label": "label",
    "is_variant": "ablation",
    "acquisition": "acquisition",
    "augment": "augment",
    "n": "n",
    "n_unfinished": "n_unfinished",
    "seeds": "seeds",
    "final_mean": "final_acc_mean",
    "final_std": "final_acc_std",
    "area_mean": "area_mean",
    "area_std": "area_std",
    "best_mean": "best_acc_mean",
    "best_std": "best_acc_std",
    "cpu": "cpu",
    "iter_s": "iter_s",
    "time_ratio": "time_ratio",
    "acquire_s": "acquire_s",
    "acq_ratio": "acq_time_ratio",
    "param": "param",
    **{f"bold_{m}": f"bold_{m}" for m in BOLD_METRICS},
}
PAPER_COLUMNS = ("paper_mean", "paper_std", "diff", "paper_time", "paper_param")


def to_csv(agg: Aggregate, paper: bool = False) -> pd.DataFrame:
    df = agg.cells.copy()
    if not len(df):
        return df
    df["section"] = df["section"].map(agg.sections)
    df["param"] = df["param"].map(
        lambda p: p if isinstance(p, str) or (isinstance(p, float) and math.isnan(p)) else int(p)
    )
    columns = {**CSV_COLUMNS, **({c: c for c in PAPER_COLUMNS} if paper else {})}
    if _has_val(agg):  # runs with a validation set
        columns.update(best_val_mean="best_val_test_acc_mean", best_val_std="best_val_test_acc_std")
    return df[list(columns)].rename(columns=columns)


def _progress(run: Run) -> str:
    total = run.protocol.get("iterations", "?") if run.config else "?"
    done = run.iterations_done
    return "not started" if done < 0 else f"iteration {done} of {total}"


def describe(run: Run) -> tuple[str, str]:
    """(status, what to do) of a run that is not finished."""
    if run.problem is not None:
        return "unusable", run.problem
    if run.failure is not None:
        error, message = run.failure.get("error", "error"), run.failure.get("message", "")
        return "failed", f"{error}: {message}; fix it and rerun the same command"
    owner = running_owner(run.path)
    if owner is not None:
        return "incomplete", f"running now ({owner}): wait for it to finish"
    how = "resumes from its checkpoint" if run.checkpoint else "starts again"
    return "incomplete", f"stopped: rerun the same command (it {how})"


def run_rows(agg: Aggregate, root: Path) -> list[dict[str, str]]:
    """One line per run that is not finished: where, what it is, how far it got, what to do."""
    out = []
    for run in agg.not_finished:
        status, what = describe(run)
        try:
            ident = (dataset_label(run.dataset), run.row.label, str(run.seed))
            protocol = str(run.protocol["name"])
        except (KeyError, TypeError, AttributeError, ValueError):
            ident, protocol = ("", "", ""), ""
        best = run.best_acc if run.metrics is not None else None
        out.append(
            {
                "run": str(run.path.relative_to(root)) if run.path != root else ".",
                "status": status,
                "dataset": ident[0],
                "method": ident[1],
                "seed": ident[2],
                "protocol": protocol,
                "progress": _progress(run) if protocol else "",
                "best so far": _num(best),
                "what to do": what,
            }
        )
    return out


_TEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _tex(text: str) -> str:
    return _TEX_SPECIAL.sub(r"\\\1", text)


def tex_label(label: str) -> str:
    """LADA_EntMix^fixed as LADA with sub- and superscript; other labels escaped."""
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?( \[.*\])?", label)
    if not m:
        return _tex(label)
    out = rf"LADA$_{{\mathrm{{{m.group(1)}}}}}" + (r"^{\mathrm{fixed}}" if m.group(2) else "") + "$"
    return out + (_tex(m.group(3)) if m.group(3) else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _tex_table(part: pd.DataFrame, paper: bool, caption: str, label: str) -> str:
    df = formatted(part, paper, bold=r"\textbf{{{}}}")
    df = df.drop(columns=[c for c in ("Paper Time", "Paper Param") if c in df])
    df = df.map(lambda c: _tex(str(c)) if not str(c).startswith(r"\textbf") else c)
    df = df.map(lambda c: c.replace("±", r"$\pm$").replace(" $\\pm$ –", ""))
    df["Method"] = [tex_label(x) for x in part["label"]]
    df = df.rename(columns={"n": "$n$", "Acq. time": "Acq.", "Δ": r"$\Delta$"})
    return df.style.hide(axis="index").to_latex(
        hrules=True,
        caption=caption,
        label=label,
        position="t",
        position_float="centering",
        column_format="ll" + "r" * (df.shape[1] - 2),
    )


TEX_CAPTION = (
    r"Final test accuracy (\%) and area under the learning curve (mean test accuracy over iterations "
    r"$0..N$), the primary columns, and the best test accuracy seen during a run (the paper's metric, "
    r"selected on the test set); mean $\pm$ sample std (ddof=1) over seeds; Time (whole iteration) and "
    r"Acq.\ (acquisition alone) relative to Random on the same CPU model. "
    + _tex(BOLD_RULE).replace("±", r"$\pm$")
)


def to_latex(agg: Aggregate, paper: bool = False, label: str = "tab:table1") -> str:
    """One booktabs table per section and dataset (needs \\usepackage{booktabs}), each with
    ``\\label{<label>-<protocol>-<model>-<dataset>}`` (the section's changed values included);
    ablations in a table of their own (``...-ablations``)."""
    out = [f"% ladarun-table. {CAPTION}{VAL_CAPTION if _has_val(agg) else ''}", ""]
    labels: set[str] = set()
    for sid, dataset, main_rows, ablations in tables(agg):
        heading = f"{_tex(agg.sections[sid])}; {dataset_label(dataset)}"
        words = agg.sections[sid].replace("Protocol ", "").replace("model ", "")
        name = f"{label}-{_slug(words)}-{_slug(dataset)}"
        while name in labels:  # two headings that slug alike
            name += "-2"
        labels.add(name)
        if len(main_rows):
            out.append(_tex_table(main_rows, paper, f"{heading}. {TEX_CAPTION}", name))
        if len(ablations):
            caption = f"{heading}: ablations (non-default settings; never bold)."
            out.append(_tex_table(ablations, paper, caption, f"{name}-ablations"))
    return "\n".join(out)
