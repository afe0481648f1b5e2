"""``ladarun-table``: Table 1 (best test accuracy, Time, Param) from a folder of runs.

Runs are grouped into cells (protocol section, dataset, Table 1 row) from their configs.
A cell's accuracy is the mean and sample standard deviation (ddof=1) over its finished seeds
of each run's best test accuracy, as the paper reports over 5 seeds. Its Time is the mean
wall time of a whole iteration (iterations >= 1: acquisition, training and test) over its
finished runs, divided by Random's in the same section and dataset. Runs of different
protocols (or models) go to different sections and are never averaged together; runs that
are unfinished, failed or unusable are listed with what to do about them.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from .runs import Run, find_run_dirs, load_run
from .table1 import DATASETS, GROUPS, OTHER_GROUP, position, rows

DATASET_LABELS = {"fashion": "Fashion", "svhn": "SVHN", "cifar10": "CIFAR-10", "digits": "Digits", "synthetic": "Synthetic"}
CAPTION = (
    "Best test accuracy (%) seen over a run, mean ± sample standard deviation (ddof=1) over seeds; "
    "n = finished seeds (+k: unfinished runs, not averaged). "
    "Time = mean wall time of a whole iteration (acquisition, training and test; iterations ≥ 1) "
    "relative to Random on the same dataset and protocol. "
    "Param = parameters of the auxiliary network (- = none). "
    "Bold: the best mean of each group that has two or more rows with results."
)

PAPER_CAPTION = (
    " Paper: the paper's Table 1 (mean ± std over 5 seeds, measured under its protocol: ResNet-18, "
    "100 iterations, 50 epochs each), Δ = our mean − the paper's; Paper Time is its acquisition-time ratio."
)


class AggregateError(Exception):
    """Nothing to aggregate; the message names the fix."""


@dataclass
class Aggregate:
    cells: pd.DataFrame  # one row per (section, dataset, row, variant)
    runs: list[Run]  # every run found, usable or not
    table: pd.DataFrame  # one row per usable run: run, section, dataset, row, label, ...
    sections: dict[str, str]  # section id -> heading
    notes: list[str] = field(default_factory=list)

    @property
    def not_finished(self) -> list[Run]:
        return [r for r in self.runs if not r.finished]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _variant_labels(settings: dict[str, dict]) -> dict[str, str]:
    """For settings that differ, a short label of the keys in which they differ."""
    if len(settings) < 2:
        return {k: "" for k in settings}
    flat = {k: _flatten(v) for k, v in settings.items()}
    keys = sorted(set().union(*flat.values()))
    differing = [key for key in keys if len({json.dumps(f.get(key), sort_keys=True) for f in flat.values()}) > 1]
    return {k: ", ".join(f"{key}={f.get(key)}" for key in differing) for k, f in flat.items()}


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _iter_s(runs: Sequence[Run]) -> float:
    """Mean iter_s over iterations >= 1, pooled over runs (iteration 0 is the initial training)."""
    values = pd.concat([r.metrics.loc[r.metrics["iteration"] >= 1, "iter_s"] for r in runs if r.metrics is not None])
    return float(values.mean()) if len(values) else math.nan


def _acquire_s(runs: Sequence[Run]) -> float:
    values = pd.concat([r.metrics.loc[r.metrics["iteration"] >= 1, "acquire_s"] for r in runs if r.metrics is not None])
    return float(values.mean()) if len(values) else math.nan


def aggregate(root: Path | str, paper: bool = False) -> Aggregate:
    """Read every run under ``root`` and build the Table 1 cells."""
    root = Path(root)
    if not root.is_dir():
        raise AggregateError(f"{root} is not a folder; pass the folder that holds the runs (e.g. outputs/)")
    runs = [load_run(p) for p in find_run_dirs(root)]
    if not runs:
        raise AggregateError(
            f"no runs under {root} (no folder with metrics.csv, summary.json or .hydra/config.yaml); "
            "pass the folder the runs were written to (outputs/, or the sweep's hydra.sweep.dir)"
        )
    usable = [r for r in runs if r.problem is None]
    notes: list[str] = []

    # Sections: one per (protocol, model) setting; protocols of one name that differ get labels.
    settings = {_key(r.setting): r.setting for r in usable}
    by_name: dict[str, dict[str, dict]] = {}
    for sid, s in settings.items():
        by_name.setdefault(s["protocol"].get("name", "?"), {})[sid] = s
    sections: dict[str, str] = {}
    for name, group in by_name.items():
        labels = _variant_labels(group)
        for sid, s in group.items():
            heading = f"Protocol {name}, model {s['model']}"
            sections[sid] = heading + (f" ({labels[sid]})" if labels[sid] else "")

    table = pd.DataFrame(
        {
            "run": usable,
            "section": [_key(r.setting) for r in usable],
            "dataset": [r.dataset for r in usable],
            "row": [r.row.key for r in usable],
            "details": [_key(r.details) for r in usable],
            "seed": [r.seed for r in usable],
            "group": [r.row.group for r in usable],
            "label": ["" for _ in usable],
        }
    )
    cells = []
    if len(table):
        for (sid, dataset, row_key), cell in table.groupby(["section", "dataset", "row"], sort=False):
            variants = _variant_labels({d: json.loads(d) for d in cell["details"].unique()})
            for details, part in cell.groupby("details", sort=False):
                label = part["run"].iloc[0].row.label + (f" [{variants[details]}]" if variants[details] else "")
                table.loc[part.index, "label"] = label
                # A finished run wins over an unfinished copy of the same seed, then the first path.
                part = part.sort_values("run", key=lambda s: s.map(lambda r: (not r.finished, str(r.path))))
                seen: dict[int, Run] = {}
                for run, seed in zip(part["run"], part["seed"]):
                    if seed in seen:
                        run.problem = (
                            f"a second run of seed {seed} (first: {seen[seed].path}); it is left out, "
                            "move one of the two out of the runs folder"
                        )
                    else:
                        seen[seed] = run
                kept = list(seen.values())
                done = [r for r in kept if r.finished]
                accs = pd.Series([r.best_acc for r in done], dtype=float)
                row = kept[0].row
                params = sorted({r.aux_params for r in done if r.aux_params is not None})
                cells.append(
                    {
                        "section": sid,
                        "protocol": kept[0].protocol.get("name"),
                        "dataset": dataset,
                        "group": row.group,
                        "row": row_key,
                        "label": label,
                        "acquisition": row.acquisition,
                        "augment": row.augment,
                        "n": len(done),
                        "n_unfinished": len(kept) - len(done),
                        "seeds": " ".join(str(r.seed) for r in sorted(done, key=lambda r: r.seed)),
                        "mean": float(accs.mean()) if len(accs) else math.nan,
                        "std": float(accs.std(ddof=1)) if len(accs) > 1 else math.nan,
                        "iter_s": _iter_s(done) if done else math.nan,
                        "acquire_s": _acquire_s(done) if done else math.nan,
                        "param": params[0] if len(params) == 1 else (math.nan if not params else "/".join(map(str, params))),
                        "is_variant": bool(variants[details]),
                        "devices": sorted({r.device for r in done if r.device}),
                    }
                )
    cells_df = pd.DataFrame(cells)
    if len(cells_df):
        cells_df = _finish(cells_df, paper, sections)
        notes += _notes(cells_df, sections)
    table = table[[r.problem is None for r in table["run"]]]  # duplicates are now out
    return Aggregate(cells=cells_df, runs=runs, table=table, sections=sections, notes=notes)


def _finish(df: pd.DataFrame, paper: bool, sections: dict[str, str]) -> pd.DataFrame:
    """Time ratios, bold marks, paper columns and the paper's order."""
    random_s = df[(df["row"] == "random") & ~df["is_variant"]].set_index(["section", "dataset"])["iter_s"]
    df["time_ratio"] = [
        row.iter_s / random_s.get((row.section, row.dataset), math.nan) for row in df.itertuples()
    ]
    df["bold"] = False
    shown = df["mean"].round(2)
    for _, idx in df[df["n"] > 0].groupby(["section", "dataset", "group"]).groups.items():
        if len(idx) >= 2 and df.loc[idx[0], "group"] != OTHER_GROUP:
            df.loc[idx, "bold"] = shown[idx] == shown[idx].max()
    if paper:
        lookup = {r.key: r for r in rows()}
        df["paper_mean"] = [lookup[k].paper_acc.get(d, (math.nan,))[0] if k in lookup else math.nan for k, d in zip(df["row"], df["dataset"])]
        df["paper_std"] = [lookup[k].paper_acc.get(d, (0, math.nan))[1] if k in lookup else math.nan for k, d in zip(df["row"], df["dataset"])]
        df["diff"] = df["mean"] - df["paper_mean"]
        df["paper_time"] = [lookup[k].paper_time if k in lookup else math.nan for k in df["row"]]
        df["paper_param"] = [lookup[k].paper_param if k in lookup else "" for k in df["row"]]
    order = {g: i for i, g in enumerate(GROUPS + (OTHER_GROUP,))}
    ds_order = {d: i for i, d in enumerate(DATASETS)}
    df["_s"] = df["section"].map(sections)
    df["_d"] = df["dataset"].map(lambda d: ds_order.get(d, len(ds_order)))
    df["_g"] = df["group"].map(order)
    df["_r"] = df["row"].map(position)
    return df.sort_values(["_s", "_d", "dataset", "_g", "_r", "row", "label"]).drop(columns=["_s", "_d", "_g", "_r"]).reset_index(drop=True)


def _notes(df: pd.DataFrame, sections: dict[str, str]) -> list[str]:
    notes = []
    for (dataset, row), part in df.groupby(["dataset", "row"]):
        protocols = sorted(part["section"].unique())
        if len(protocols) > 1:
            names = ", ".join(sorted({str(p) for p in part["protocol"]}))
            notes.append(
                f"{part['label'].iloc[0]} on {dataset} has runs under {len(protocols)} protocol settings ({names}); "
                "each is reported in its own section, never averaged together."
            )
    for sid, part in df.groupby("section"):
        devices = sorted(set().union(*part["devices"]))
        if len(devices) > 1:
            notes.append(f"{sections[sid]} mixes devices ({'; '.join(devices)}); its Time ratios compare across them.")
        for dataset, dpart in part[part["n"] > 0].groupby("dataset"):
            if dpart["time_ratio"].isna().all():
                notes.append(f"{sections[sid]}: no finished Random run on {dataset}, so its Time column is empty.")
    return notes


# --- formatting ------------------------------------------------------------------------


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


def _seeds(row: Any) -> str:
    return f"{row.n}" + (f" (+{row.n_unfinished})" if row.n_unfinished else "")


def _progress(run: Run) -> str:
    total = run.protocol.get("iterations", "?") if run.config else "?"
    done = run.iterations_done
    return "not started" if done < 0 else f"iteration {done} of {total}"


def _describe(run: Run) -> tuple[str, str]:
    """(status, what to do) of a run that is not finished."""
    if run.problem is not None:
        return "unusable", run.problem
    if run.failure is not None:
        return "failed", f"{run.failure.get('error', 'error')}: {run.failure.get('message', '')}; fix it and rerun the same command"
    how = "resumes from its checkpoint" if run.checkpoint else "starts again"
    return "incomplete", f"still running, or stopped: rerun the same command (it {how})"


def _run_rows(agg: Aggregate, root: Path) -> list[dict[str, str]]:
    out = []
    for run in agg.not_finished:
        status, what = _describe(run)
        try:
            ident = (DATASET_LABELS.get(run.dataset, run.dataset), run.row.label, str(run.seed), str(run.protocol.get("name")))
        except (KeyError, TypeError):
            ident = ("", "", "", "")
        best = run.best_acc if run.metrics is not None else None
        out.append(
            {
                "run": str(run.path.relative_to(root)) if run.path != root else ".",
                "status": status,
                "dataset": ident[0],
                "method": ident[1],
                "seed": ident[2],
                "protocol": ident[3],
                "progress": _progress(run) if ident[3] else "",
                "best so far": _num(best),
                "what to do": what,
            }
        )
    return out


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return lines


def to_markdown(agg: Aggregate, root: Path, paper: bool = False) -> str:
    lines = [f"# Table 1 from {root}", "", CAPTION + (PAPER_CAPTION if paper else ""), ""]
    df = agg.cells
    for sid in (df["section"].unique() if len(df) else []):
        lines += [f"## {agg.sections[sid]}", ""]
        sec = df[df["section"] == sid]
        for dataset in sec["dataset"].unique():
            part = sec[sec["dataset"] == dataset]
            lines += [f"### {DATASET_LABELS.get(dataset, dataset)}", ""]
            header = ["Group", "Method", "Accuracy", "n", "Time", "Param"]
            if paper:
                header += ["Paper", "Δ", "Paper Time", "Paper Param"]
            body, last_group = [], None
            for r in part.itertuples():
                acc = _acc(r.mean, r.std)
                cells = [r.group if r.group != last_group else "", r.label, f"**{acc}**" if r.bold and acc else acc,
                         _seeds(r), _num(r.time_ratio), _param(r.param)]
                if paper:
                    cells += [_acc(r.paper_mean, r.paper_std), _num(r.diff, "{:+.2f}"), _num(r.paper_time), r.paper_param]
                body.append(cells)
                last_group = r.group
            lines += _md_table(header, body) + [""]
    listed = _run_rows(agg, root)
    lines += ["## Unfinished, failed and unusable runs", ""]
    if listed:
        lines += _md_table(list(listed[0]), [list(r.values()) for r in listed]) + [""]
    else:
        lines += ["None: every run found is finished.", ""]
    if agg.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in agg.notes] + [""]
    return "\n".join(lines)


def to_csv(agg: Aggregate, paper: bool = False) -> pd.DataFrame:
    df = agg.cells.copy()
    if not len(df):
        return df
    df["section"] = df["section"].map(agg.sections)
    df["param"] = df["param"].map(lambda p: p if isinstance(p, str) or (isinstance(p, float) and math.isnan(p)) else int(p))
    cols = ["section", "protocol", "dataset", "group", "row", "label", "acquisition", "augment", "n", "n_unfinished",
            "seeds", "mean", "std", "iter_s", "time_ratio", "acquire_s", "param", "bold"]
    if paper:
        cols += ["paper_mean", "paper_std", "diff", "paper_time", "paper_param"]
    return df[cols].rename(columns={"mean": "best_acc_mean", "std": "best_acc_std"})


_TEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _tex_label(label: str) -> str:
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?( \[.*\])?", label)
    if m:
        out = rf"LADA$_{{\mathrm{{{m.group(1)}}}}}" + (r"^{\mathrm{fixed}}" if m.group(2) else "") + "$"
        return out + (_TEX_SPECIAL.sub(r"\\\1", m.group(3)) if m.group(3) else "")
    return _TEX_SPECIAL.sub(r"\\\1", label)


def _tex_acc(mean: float, std: float, bold: bool = False) -> str:
    if math.isnan(mean):
        return ""
    s = f"{mean:.2f} $\\pm$ {std:.2f}" if not math.isnan(std) else f"{mean:.2f}"
    return rf"\textbf{{{s}}}" if bold else s


def to_latex(agg: Aggregate, paper: bool = False) -> str:
    """One booktabs tabular per section and dataset (needs \\usepackage{booktabs})."""
    out = [f"% ladarun-table. {CAPTION}", ""]
    df = agg.cells
    for sid in (df["section"].unique() if len(df) else []):
        sec = df[df["section"] == sid]
        for dataset in sec["dataset"].unique():
            part = sec[sec["dataset"] == dataset]
            name = DATASET_LABELS.get(dataset, dataset)
            cols = "llrrrr" + ("rr" if paper else "")
            head = ["Group", "Method", "Accuracy", "$n$", "Time", "Param"] + (["Paper", r"$\Delta$"] if paper else [])
            heading = _TEX_SPECIAL.sub(r"\\\1", agg.sections[sid])
            out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{heading}; {name}. "
                    r"Best test accuracy (\%), mean $\pm$ sample std (ddof=1) over seeds; Time relative to Random.}",
                    rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
            last = None
            for r in part.itertuples():
                if last is not None and r.group != last:
                    out.append(r"\midrule")
                cells = [_TEX_SPECIAL.sub(r"\\\1", r.group) if r.group != last else "", _tex_label(r.label),
                         _tex_acc(r.mean, r.std, r.bold), _seeds(r), _num(r.time_ratio), _param(r.param)]
                if paper:
                    cells += [_tex_acc(r.paper_mean, r.paper_std), _num(r.diff, "{:+.2f}")]
                out.append(" & ".join(cells) + r" \\")
                last = r.group
            out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-table",
        description="Write table1.md, table1.csv and table1.tex (the paper's Table 1) from a folder of ladarun runs.",
    )
    parser.add_argument("runs_dir", nargs="?", default="outputs", help="folder searched for runs (default: outputs)")
    parser.add_argument("--out", default=None, help="where the tables go (default: RUNS_DIR)")
    parser.add_argument("--paper", action="store_true", help="add the paper's values and the difference")
    args = parser.parse_args(argv)
    root = Path(args.runs_dir)
    try:
        agg = aggregate(root, paper=args.paper)
    except AggregateError as err:
        print(f"ladarun-table: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(agg, root, args.paper)
    (out / "table1.md").write_text(md)
    to_csv(agg, args.paper).to_csv(out / "table1.csv", index=False)
    (out / "table1.tex").write_text(to_latex(agg, args.paper))
    print(md)
    finished = sum(r.finished for r in agg.runs)
    print(f"ladarun-table: {len(agg.runs)} runs, {finished} finished; wrote {out / 'table1.md'}, table1.csv, table1.tex", file=sys.stderr)
    for run in agg.not_finished:
        status, what = _describe(run)
        print(f"ladarun-table: {status}: {run.path}: {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
