"""``ladarun-table``: Table 1 (best, final and area accuracy, Time, Param) from a folder of runs.

Runs are grouped into cells (protocol section, dataset, Table 1 row) from their configs.
A cell reports, as mean and sample standard deviation (ddof=1) over its finished seeds (the
paper reports 5): each run's best test accuracy, its final test accuracy and the area under its
learning curve (the mean test accuracy over iterations 0..N; final and area are read from
metrics.csv, so runs of any version have them). Its Time is the mean wall time of a whole
iteration (iterations >= 1: acquisition, training and test) over its finished runs, divided by
Random's in the same section and dataset; Acq. time is the same ratio for the acquisition step
alone. Runs of different protocols (or models) go to different sections and are never averaged
together; a row run under several settings (an ablation such as augment.tau_activation=softplus)
keeps its plain label for the package's default setting, and its other settings go to an
ablation section that never takes the bold. Bold marks come from a one-sided Welch t-test on
the per-seed values (:func:`bold_rows`). Runs that are unfinished, failed or unusable are listed
with what to do about them. The command only reads runs; it writes table1.{md,csv,tex}.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
from scipy.stats import ttest_ind

from ..conf import CONF_DIR
from ..rundir.lock import running_owner
from .rows import DATASETS, GROUPS, OTHER_GROUP, position, rows
from .runs import Run, default_config, find_run_dirs, flatten, load_run

DATASET_LABELS = {
    "fashion": "Fashion",
    "svhn": "SVHN",
    "cifar10": "CIFAR-10",
    "digits": "Digits",
    "synthetic": "Synthetic",
}
ALPHA = 0.05  # significance level of the bold rule's one-sided Welch t-test
METRICS = (("best", "Best"), ("final", "Final"), ("area", "Area"))  # (column prefix, heading)
BOLD_RULE = (
    "Bold, in each accuracy column (Best, Final, Area) separately, within each group of two or more rows "
    "with results: the best row alone where it beats the second-best by more than the seed noise "
    f"(one-sided Welch t-test on the per-seed values, p < {ALPHA}); otherwise every row that is not "
    "significantly worse than the best (same test), so several rows are bold when the seeds cannot "
    "separate them. A row with one seed cannot be tested and is never significantly worse."
)
CAPTION = (
    "Best = best test accuracy (%) seen over a run (summary.json); Final = test accuracy after the last "
    "iteration; Area = area under the learning curve, the mean test accuracy over iterations 0..N "
    "(both from metrics.csv); each mean ± sample standard deviation (ddof=1) over seeds; "
    "n = finished seeds (+k: unfinished runs, not averaged). "
    "Time = mean wall time of a whole iteration (acquisition, training and test; iterations ≥ 1) "
    "relative to Random on the same dataset and protocol; Acq. time = the same ratio for the acquisition "
    "step alone (mean acquire_s, iterations ≥ 1; Random's acquisition is a random draw of about a "
    "millisecond, so these ratios are large). "
    "Param = parameters of the auxiliary network (- = none). "
    + BOLD_RULE
    + " Ablations (a row run with a non-default setting, labelled [key=value]) are listed in their own "
    "section and never bold. Groups whose rows have different seed counts are listed under Notes."
)

PAPER_CAPTION = (
    " Paper: the paper's Table 1 (mean ± std over 5 seeds, measured under its protocol: ResNet-18, "
    "100 iterations, 50 epochs each), Δ = our Best mean − the paper's; Paper Time is its acquisition-time ratio."
)


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


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _value(v: Any) -> str:
    """A config value as it is written on the command line (null, true, 0.001)."""
    return json.dumps(v) if v is None or isinstance(v, bool) else str(v)


def _preset_protocol(name: str) -> Optional[dict[str, Any]]:
    """The protocol values of conf/protocol/<name>.yaml (over protocol_defaults.yaml); None when
    the package has no such preset (a protocol from another config folder)."""
    if not (CONF_DIR / "protocol" / f"{name}.yaml").is_file():
        return None
    return default_config({"protocol": {"name": name}}).get("protocol") or None


def _section_headings(name: str, group: dict[str, dict]) -> dict[str, str]:
    """The heading of each setting (protocol values and model) run under protocol ``name``.

    A heading names every protocol value that differs from the preset, so a section of runs made
    with protocol.iterations=10 reads "Protocol quick (iterations=10), model cnn". A key the run's
    config lacks (written before the key existed) counts as the preset's. Settings that the
    preset cannot tell apart (no such preset in conf/, or keys the preset lacks) are told apart by
    the values in which they differ from each other.
    """
    preset = _preset_protocol(name)
    protocols = {sid: s["protocol"] for sid, s in group.items()}

    def changed(sid: str, keys: Sequence[str]) -> list[str]:
        p = protocols[sid]
        return [k for k in keys if k in p and (preset is None or _key(p[k]) != _key(preset.get(k)))]

    def heading(sid: str, keys: list[str]) -> str:
        values = ", ".join(f"{k}={_value(protocols[sid].get(k))}" for k in keys)
        return (
            f"Protocol {name}"
            + (f" ({values})" if values else "")
            + f", model {group[sid]['model']}"
        )

    order = [k for k in (preset or {}) if k != "name"]
    order += sorted({k for p in protocols.values() for k in p} - set(order) - {"name"})
    keys = {sid: changed(sid, order) for sid in group} if preset is not None else {}
    if preset is None or len({heading(sid, keys[sid]) for sid in group}) < len(group):
        differing = [k for k in order if len({_key(p.get(k)) for p in protocols.values()}) > 1]
        keys = {
            sid: sorted(set(keys.get(sid, [])) | set(differing), key=order.index) for sid in group
        }
    return {sid: heading(sid, keys[sid]) for sid in group}


def _normalized(run: Run) -> dict[str, Any]:
    """The run's details, flattened, with the package defaults filled in where its config lacks a key
    (a run written before the key existed) and a resolved default (VAAL's ``steps: 100``, from
    summary.json) written as the unresolved one (``${aux.vaal_steps}``, from .hydra/config.yaml),
    so runs of one setting compare equal whichever file their config came from."""
    unresolved, resolved = run.default_details
    out = dict(unresolved)
    for k, v in flatten(run.details).items():
        default = k in unresolved and _key(v) in (_key(unresolved[k]), _key(resolved.get(k)))
        out[k] = unresolved[k] if default else v
    return out


def _variants(
    settings: dict[str, dict[str, Any]], defaults: dict[str, Any]
) -> dict[str, tuple[str, bool]]:
    """(label suffix, is an ablation) of each of a cell's settings (flat details).

    One setting: the row itself, whatever its values. Several: the keys in which they differ; the
    setting whose differing keys all hold the package default (or are absent where conf/ has no
    such key) is the row and keeps the plain label, each other one is an ablation labelled with
    its non-default values."""
    if len(settings) < 2:
        return {k: ("", False) for k in settings}
    keys = sorted(set().union(*settings.values()))
    differing = [key for key in keys if len({_key(f.get(key)) for f in settings.values()}) > 1]
    out = {}
    for k, f in settings.items():
        changed = [
            key
            for key in differing
            if (key in f or key in defaults)
            and not (key in defaults and key in f and _key(f[key]) == _key(defaults[key]))
        ]
        out[k] = (", ".join(f"{key}={f.get(key)}" for key in changed), bool(changed))
    return out


def _measured(value: Optional[float]) -> float:
    """An accuracy of a finished run, which always has one (load_run marks a finished run without
    a full metrics.csv unusable)."""
    assert value is not None
    return value


def _per_run(runs: Sequence[Run], column: str) -> float:
    """Mean of a metrics.csv column over iterations >= 1, pooled over runs (iteration 0 is the initial training)."""
    values = pd.concat(
        [r.metrics.loc[r.metrics["iteration"] >= 1, column] for r in runs if r.metrics is not None]
    )
    return float(values.mean()) if len(values) else math.nan


def _iter_s(runs: Sequence[Run]) -> float:
    return _per_run(runs, "iter_s")


def _acquire_s(runs: Sequence[Run]) -> float:
    return _per_run(runs, "acquire_s")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    s = pd.Series(list(values), dtype=float)
    return (
        float(s.mean()) if len(s) else math.nan,
        float(s.std(ddof=1)) if len(s) > 1 else math.nan,
    )


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(one-sided p that ``a`` is ahead, two-sided p): Welch's t-test on per-seed values
    (scipy.stats.ttest_ind, equal_var=False). NaN where either side has fewer than two values."""
    if min(len(a), len(b)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # scipy warns of precision loss for nearly identical values
        warnings.simplefilter("ignore", RuntimeWarning)
        one = ttest_ind(list(a), list(b), equal_var=False, alternative="greater").pvalue
        two = ttest_ind(list(a), list(b), equal_var=False).pvalue
    return float(one), float(two)


def significantly_worse(
    best: Sequence[float], other: Sequence[float], alpha: float = ALPHA
) -> bool:
    """Whether ``other`` is below ``best`` by more than the seed noise: a one-sided Welch t-test
    (:func:`welch`) at p < ``alpha``. Fewer than two values on either side (no variance to test)
    is never significant."""
    if len(best) < 2 or len(other) < 2:
        return False
    if len(set(best)) == 1 and len(set(other)) == 1:  # no noise at all: any difference is beyond it
        return best[0] > other[0]
    return bool(welch(best, other)[0] < alpha)  # a NaN p is not significant


def bold_rows(samples: Sequence[Sequence[float]], alpha: float = ALPHA) -> list[bool]:
    """Bold marks for the rows of one group, from each row's per-seed values.

    The best mean is bold alone where it is significantly better than the second-best (see
    :func:`significantly_worse`); otherwise every row that is not significantly worse than the
    best is bold. A group of fewer than two rows has no bold."""
    if len(samples) < 2:
        return [False] * len(samples)
    means = [sum(s) / len(s) for s in samples]
    order = sorted(range(len(samples)), key=lambda i: -means[i])  # stable: ties keep table order
    best = samples[order[0]]
    if significantly_worse(best, samples[order[1]], alpha):
        return [i == order[0] for i in range(len(samples))]
    return [
        i == order[0] or not significantly_worse(best, samples[i], alpha)
        for i in range(len(samples))
    ]


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
    runs = [load_run(p) for p in find_run_dirs(root)]
    if not runs:
        raise AggregateError(
            f"no runs under {root} (no folder with metrics.csv, summary.json or .hydra/config.yaml); "
            "pass the folder the runs were written to (outputs/, or the sweep's hydra.sweep.dir)"
        )
    usable = [r for r in runs if r.problem is None]
    shown = select_rows([r.row.key for r in usable], keep, exclude)
    notes: list[str] = []

    # Sections: one per (protocol, model) setting; protocols of one name that differ get labels.
    settings = {_key(r.setting): r.setting for r in usable}
    by_name: dict[str, dict[str, dict]] = {}
    for sid, s in settings.items():
        by_name.setdefault(s["protocol"].get("name", "?"), {})[sid] = s
    sections: dict[str, str] = {}
    for name, group in by_name.items():
        sections.update(_section_headings(name, group))

    table = pd.DataFrame(
        {
            "run": usable,
            "section": [_key(r.setting) for r in usable],
            "dataset": [r.dataset for r in usable],
            "row": [r.row.key for r in usable],
            "details": [_key(_normalized(r)) for r in usable],
            "seed": [r.seed for r in usable],
            "group": [r.row.group for r in usable],
            "label": ["" for _ in usable],
            "is_variant": [False for _ in usable],
        }
    )
    cells = []
    if len(table):
        for (sid, dataset, row_key), cell in table.groupby(
            ["section", "dataset", "row"], sort=False
        ):
            first = cell["run"].iloc[0]
            variants = _variants(
                {d: json.loads(d) for d in cell["details"].unique()}, first.default_details[0]
            )
            if len(variants) > 1 and all(v for _, v in variants.values()):
                notes.append(
                    f"{first.row.label} on {dataset} ({sections[sid]}) has runs under "
                    f"{len(variants)} settings, none of "
                    "them the package default (conf/): all are listed as ablations."
                )
            for details, part in cell.groupby("details", sort=False):
                suffix, is_variant = variants[details]
                label = part["run"].iloc[0].row.label + (f" [{suffix}]" if suffix else "")
                table.loc[part.index, "label"] = label
                table.loc[part.index, "is_variant"] = is_variant
                # A finished run wins over an unfinished copy of the same seed, then the first path.
                part = part.sort_values(
                    "run", key=lambda s: s.map(lambda r: (not r.finished, str(r.path)))
                )
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
                done = sorted((r for r in kept if r.finished), key=lambda r: r.seed)
                row = kept[0].row
                params = sorted({r.aux_params for r in done if r.aux_params is not None})
                values = {
                    "best": [_measured(r.best_acc) for r in done],
                    "final": [_measured(r.final_acc) for r in done],
                    "area": [_measured(r.area) for r in done],
                }
                cell_row = {
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
                    "seeds": " ".join(str(r.seed) for r in done),
                    "iter_s": _iter_s(done) if done else math.nan,
                    "acquire_s": _acquire_s(done) if done else math.nan,
                    "param": params[0]
                    if len(params) == 1
                    else (math.nan if not params else "/".join(map(str, params))),
                    "is_variant": is_variant,
                    "devices": sorted({r.device for r in done if r.device}),
                    "cpus": sorted({r.cpu for r in done if r.cpu}),
                }
                if row.augment == "adamixup" and done and row_key in shown:
                    notes += _adamixup_region(done, label, dataset, sections[sid])
                for metric, vals in values.items():
                    cell_row[f"{metric}_values"] = [float(v) for v in vals]
                    cell_row[f"{metric}_mean"], cell_row[f"{metric}_std"] = _mean_std(vals)
                cells.append(cell_row)
    cells_df = pd.DataFrame(cells)
    mismatches: list[str] = []
    if len(cells_df):
        cells_df = _finish(cells_df, paper, sections, shown)
        mismatches = _mismatches(cells_df, sections)
        notes += _notes(cells_df, sections) + mismatches
    table = table[[r.problem is None for r in table["run"]]]  # duplicates are now out
    if len(table):
        table = table[table["row"].isin(shown)]
    return Aggregate(
        cells=cells_df,
        runs=[r for r in runs if _row_key(r) in shown | {None}],
        table=table,
        sections=sections,
        notes=notes,
        mismatches=mismatches,
    )


def _ratio(df: pd.DataFrame, column: str) -> list[float]:
    """``column`` over Random's (its default setting) in the same section and dataset."""
    random = df[(df["row"] == "random") & ~df["is_variant"]].set_index(["section", "dataset"])[
        column
    ]
    out = []
    for row in df.itertuples():
        base = random.get((row.section, row.dataset), math.nan)
        out.append(getattr(row, column) / base if base and not math.isnan(base) else math.nan)
    return out


def _compared(df: pd.DataFrame):
    """The (section, dataset, group) groups whose rows are compared: rows with results, no ablations,
    Table 1 groups only."""
    shown = df[(df["n"] > 0) & ~df["is_variant"] & (df["group"] != OTHER_GROUP)]
    return shown.groupby(["section", "dataset", "group"], sort=False)


def _row_key(run: Run) -> Optional[str]:
    """The run's row key; None when its config cannot say (an unusable run)."""
    try:
        return run.row.key
    except (KeyError, TypeError):
        return None


def _finish(
    df: pd.DataFrame, paper: bool, sections: dict[str, str], shown: set[str]
) -> pd.DataFrame:
    """Time ratios (over every row), then the rows shown: bold marks, paper columns and the
    paper's order."""
    df["time_ratio"] = _ratio(df, "iter_s")
    df["acq_ratio"] = _ratio(df, "acquire_s")
    df = df[df["row"].isin(shown)].reset_index(drop=True).copy()
    for metric, _ in METRICS:
        df[f"bold_{metric}"] = False
    for _, part in _compared(df):
        for metric, _ in METRICS:
            df.loc[part.index, f"bold_{metric}"] = bold_rows(list(part[f"{metric}_values"]))
    if paper:
        lookup = {r.key: r for r in rows()}
        df["paper_mean"] = [
            lookup[k].paper_acc.get(d, (math.nan,))[0] if k in lookup else math.nan
            for k, d in zip(df["row"], df["dataset"])
        ]
        df["paper_std"] = [
            lookup[k].paper_acc.get(d, (0, math.nan))[1] if k in lookup else math.nan
            for k, d in zip(df["row"], df["dataset"])
        ]
        df["diff"] = df["best_mean"] - df["paper_mean"]
        df["paper_time"] = [lookup[k].paper_time if k in lookup else math.nan for k in df["row"]]
        df["paper_param"] = [lookup[k].paper_param if k in lookup else "" for k in df["row"]]
    order = {g: i for i, g in enumerate(GROUPS + (OTHER_GROUP,))}
    ds_order = {d: i for i, d in enumerate(DATASETS)}
    df["_s"] = df["section"].map(sections)
    df["_d"] = df["dataset"].map(lambda d: ds_order.get(d, len(ds_order)))
    df["_g"] = df["group"].map(order)
    df["_r"] = df["row"].map(position)
    keys = ["_s", "_d", "dataset", "is_variant", "_g", "_r", "row", "label"]
    return df.sort_values(keys).drop(columns=["_s", "_d", "_g", "_r"]).reset_index(drop=True)


def _mismatches(df: pd.DataFrame, sections: dict[str, str]) -> list[str]:
    """One line per compared group whose rows have different numbers of finished seeds."""
    out = []
    for (sid, dataset, group), part in _compared(df):
        if part["n"].nunique() > 1:
            counts = ", ".join(f"{r.label} n={r.n}" for r in part.itertuples())
            out.append(
                f"seed counts differ in {sections[sid]}, {DATASET_LABELS.get(dataset, dataset)}, {group}: {counts} "
                "(the Welch test allows for unequal n; rerun the missing seeds for a like-for-like comparison)"
            )
    return out


def _adamixup_region(done: Sequence[Run], label: str, dataset: str, section: str) -> list[str]:
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


def _notes(df: pd.DataFrame, sections: dict[str, str]) -> list[str]:
    notes = []
    for (dataset, _row), part in df.groupby(["dataset", "row"]):
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
            notes.append(
                f"{sections[sid]} mixes devices ({'; '.join(devices)}); its Time ratios compare across them."
            )
        cpus = sorted(set().union(*part["cpus"]))
        if len(cpus) > 1:
            notes.append(
                f"{sections[sid]} mixes CPUs ({'; '.join(cpus)}): its Time ratios compare across them, "
                "and one config and seed give different runs on them, apart as seeds are (docs/methods.md §14)."
            )
        for dataset, dpart in part[part["n"] > 0].groupby("dataset"):
            if dpart["time_ratio"].isna().all():
                notes.append(
                    f"{sections[sid]}: no finished Random run on {dataset}, so its Time column is empty."
                )
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
        return (
            "failed",
            f"{run.failure.get('error', 'error')}: {run.failure.get('message', '')}; fix it and rerun the same command",
        )
    owner = running_owner(run.path)
    if owner is not None:
        return "incomplete", f"running now ({owner}): wait for it to finish"
    how = "resumes from its checkpoint" if run.checkpoint else "starts again"
    return "incomplete", f"stopped: rerun the same command (it {how})"


def _run_rows(agg: Aggregate, root: Path) -> list[dict[str, str]]:
    out = []
    for run in agg.not_finished:
        status, what = _describe(run)
        try:
            ident = (
                DATASET_LABELS.get(run.dataset, run.dataset),
                run.row.label,
                str(run.seed),
                str(run.protocol.get("name")),
            )
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


def _rat(x: Any) -> str:
    """A ratio with about three significant digits (acquisition ratios reach the thousands)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _header(paper: bool) -> list[str]:
    header = ["Group", "Method"] + [h for _, h in METRICS] + ["n", "Time", "Acq. time", "Param"]
    return header + (["Paper", "Δ", "Paper Time", "Paper Param"] if paper else [])


def _md_row(r: Any, group: str, paper: bool) -> list[str]:
    cells = [group, r.label]
    for metric, _ in METRICS:
        acc = _acc(getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std"))
        cells.append(f"**{acc}**" if getattr(r, f"bold_{metric}") and acc else acc)
    cells += [_seeds(r), _num(r.time_ratio), _rat(r.acq_ratio), _param(r.param)]
    if paper:
        cells += [
            _acc(r.paper_mean, r.paper_std),
            _num(r.diff, "{:+.2f}"),
            _num(r.paper_time),
            r.paper_param,
        ]
    return cells


def to_markdown(agg: Aggregate, root: Path, paper: bool = False) -> str:
    lines = [f"# Table 1 from {root}", "", CAPTION + (PAPER_CAPTION if paper else ""), ""]
    df = agg.cells
    for sid in df["section"].unique() if len(df) else []:
        lines += [f"## {agg.sections[sid]}", ""]
        sec = df[df["section"] == sid]
        for dataset in sec["dataset"].unique():
            part = sec[sec["dataset"] == dataset]
            name = DATASET_LABELS.get(dataset, dataset)
            lines += [f"### {name}", ""]
            main_rows, ablations = part[~part["is_variant"]], part[part["is_variant"]]
            if len(main_rows):
                body, last_group = [], None
                for r in main_rows.itertuples():
                    body.append(_md_row(r, r.group if r.group != last_group else "", paper))
                    last_group = r.group
                lines += _md_table(_header(paper), body) + [""]
            if len(ablations):
                lines += [f"#### {name}: ablations (non-default settings; never bold)", ""]
                lines += _md_table(
                    _header(paper), [_md_row(r, r.group, paper) for r in ablations.itertuples()]
                ) + [""]
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
    df["param"] = df["param"].map(
        lambda p: p if isinstance(p, str) or (isinstance(p, float) and math.isnan(p)) else int(p)
    )
    cols = [
        "section",
        "protocol",
        "dataset",
        "group",
        "row",
        "label",
        "is_variant",
        "acquisition",
        "augment",
        "n",
        "n_unfinished",
        "seeds",
        "best_mean",
        "best_std",
        "final_mean",
        "final_std",
        "area_mean",
        "area_std",
        "iter_s",
        "time_ratio",
        "acquire_s",
        "acq_ratio",
        "param",
        "bold_best",
        "bold_final",
        "bold_area",
    ]
    if paper:
        cols += ["paper_mean", "paper_std", "diff", "paper_time", "paper_param"]
    names = {
        "is_variant": "ablation",
        "best_mean": "best_acc_mean",
        "best_std": "best_acc_std",
        "final_mean": "final_acc_mean",
        "final_std": "final_acc_std",
        "acq_ratio": "acq_time_ratio",
    }
    return df[cols].rename(columns=names)


_TEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _tex_label(label: str) -> str:
    m = re.fullmatch(r"LADA_(\w+?)(\^fixed)?( \[.*\])?", label)
    if m:
        out = (
            rf"LADA$_{{\mathrm{{{m.group(1)}}}}}"
            + (r"^{\mathrm{fixed}}" if m.group(2) else "")
            + "$"
        )
        return out + (_TEX_SPECIAL.sub(r"\\\1", m.group(3)) if m.group(3) else "")
    return _TEX_SPECIAL.sub(r"\\\1", label)


def _tex_acc(mean: float, std: float, bold: bool = False) -> str:
    if math.isnan(mean):
        return ""
    s = f"{mean:.2f} $\\pm$ {std:.2f}" if not math.isnan(std) else f"{mean:.2f}"
    return rf"\textbf{{{s}}}" if bold else s


TEX_CAPTION = (
    r"Best and final test accuracy (\%) and area under the learning curve (mean test accuracy over iterations "
    r"$0..N$), mean $\pm$ sample std (ddof=1) over seeds; Time (whole iteration) and Acq.\ (acquisition alone) "
    r"relative to Random. Bold, per column within each group: the best row alone where it beats the second-best "
    rf"by more than the seed noise (one-sided Welch $t$-test on the per-seed values, $p < {ALPHA}$); otherwise "
    r"every row not significantly worse than the best. Ablations (non-default settings) are "
    r"listed apart and never bold."
)


def _tex_row(r: Any, group: str, paper: bool) -> str:
    cells = [_TEX_SPECIAL.sub(r"\\\1", group), _tex_label(r.label)]
    cells += [
        _tex_acc(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"), getattr(r, f"bold_{m}"))
        for m, _ in METRICS
    ]
    cells += [_seeds(r), _num(r.time_ratio), _rat(r.acq_ratio), _param(r.param)]
    if paper:
        cells += [_tex_acc(r.paper_mean, r.paper_std), _num(r.diff, "{:+.2f}")]
    return " & ".join(cells) + r" \\"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_latex(agg: Aggregate, paper: bool = False, label: str = "tab:table1") -> str:
    """One booktabs tabular per section and dataset (needs \\usepackage{booktabs}), each with
    ``\\label{<label>-<protocol>-<model>-<dataset>}`` (the section's changed values included)."""
    out = [f"% ladarun-table. {CAPTION}", ""]
    labels: set[str] = set()
    df = agg.cells
    for sid in df["section"].unique() if len(df) else []:
        sec = df[df["section"] == sid]
        for dataset in sec["dataset"].unique():
            part = sec[sec["dataset"] == dataset]
            name = DATASET_LABELS.get(dataset, dataset)
            head = ["Group", "Method", "Best", "Final", "Area", "$n$", "Time", "Acq.", "Param"] + (
                ["Paper", r"$\Delta$"] if paper else []
            )
            cols = "ll" + "r" * (len(head) - 2)
            heading = _TEX_SPECIAL.sub(r"\\\1", agg.sections[sid])
            words = agg.sections[sid].replace("Protocol ", "").replace("model ", "")
            tex_label = f"{label}-{_slug(words)}-{_slug(dataset)}"
            while tex_label in labels:  # two headings that slug alike
                tex_label += "-2"
            labels.add(tex_label)
            out += [
                r"\begin{table}[t]",
                r"\centering",
                rf"\caption{{{heading}; {name}. {TEX_CAPTION}}}",
                rf"\label{{{tex_label}}}",
                rf"\begin{{tabular}}{{{cols}}}",
                r"\toprule",
                " & ".join(head) + r" \\",
                r"\midrule",
            ]
            last = None
            for r in part[~part["is_variant"]].itertuples():
                if last is not None and r.group != last:
                    out.append(r"\midrule")
                out.append(_tex_row(r, r.group if r.group != last else "", paper))
                last = r.group
            ablations = part[part["is_variant"]]
            if len(ablations):
                if last is not None:
                    out.append(r"\midrule")
                out.append(
                    rf"\multicolumn{{{len(head)}}}{{l}}{{\emph{{Ablations (non-default settings; never bold)}}}} \\"
                )
                out += [_tex_row(r, r.group, paper) for r in ablations.itertuples()]
            out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _keys(text: str) -> list[str]:
    """A comma-separated list of row keys."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("give row keys separated by commas, e.g. random,ent")
    return keys


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ladarun-table",
        description="Write table1.md, table1.csv and table1.tex (the paper's Table 1) from a folder of ladarun runs. "
        "Runs are only read; nothing else is written.",
    )
    parser.add_argument(
        "runs_dir", nargs="?", default="outputs", help="folder searched for runs (default: outputs)"
    )
    parser.add_argument("--out", default=None, help="where the tables go (default: RUNS_DIR)")
    parser.add_argument(
        "--paper", action="store_true", help="add the paper's values and the difference"
    )
    parser.add_argument(
        "--require-equal-seeds",
        action="store_true",
        help="fail (exit 2, no table written) when the rows of a group have different numbers of finished seeds; "
        "without it the table is written and the groups are listed under Notes",
    )
    parser.add_argument(
        "--rows",
        type=_keys,
        default=None,
        metavar="KEY,...",
        help="only these rows, by method= key, in the paper's order (e.g. random,ent,ent_infomixup); "
        "Time is still relative to Random",
    )
    parser.add_argument(
        "--exclude", type=_keys, default=(), metavar="KEY,...", help="leave out these rows"
    )
    parser.add_argument(
        "--label",
        default="tab:table1",
        help="prefix of each LaTeX table's \\label (default tab:table1: tab:table1-quick-cnn-fashion)",
    )
    args = parser.parse_args(argv)
    root = Path(args.runs_dir)
    try:
        agg = aggregate(root, paper=args.paper, keep=args.rows, exclude=args.exclude)
    except AggregateError as err:
        print(f"ladarun-table: error: {err}", file=sys.stderr)
        return 2
    if args.require_equal_seeds and agg.mismatches:
        for line in agg.mismatches:
            print(f"ladarun-table: error: {line}", file=sys.stderr)
        print("ladarun-table: error: --require-equal-seeds: no table written", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(agg, root, args.paper)
    (out / "table1.md").write_text(md)
    to_csv(agg, args.paper).to_csv(out / "table1.csv", index=False)
    (out / "table1.tex").write_text(to_latex(agg, args.paper, args.label))
    print(md)
    finished = sum(r.finished for r in agg.runs)
    print(
        f"ladarun-table: {len(agg.runs)} runs, {finished} finished; wrote {out / 'table1.md'}, table1.csv, table1.tex",
        file=sys.stderr,
    )
    for line in agg.mismatches:
        print(f"ladarun-table: warning: {line}", file=sys.stderr)
    for run in agg.not_finished:
        status, what = _describe(run)
        print(f"ladarun-table: {status}: {run.path}: {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
