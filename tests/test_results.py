"""The committed replication runs (results/<name>/) regenerate their committed tables exactly."""

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, read_csv
from ladarun.report.table import aggregate
from ladarun.report.table import main as table_main

RESULTS = sorted(p for p in (REPO / "results").glob("*") if (p / "table1.md").exists())


def test_results_folders_exist():
    assert RESULTS, "results/ holds no committed replication (results/<name>/table1.md)"


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_runs_regenerate_the_committed_table(folder: Path, tmp_path, monkeypatch):
    # as `make table1 RUNS=results/<name>` runs it: the heading names the folder
    monkeypatch.chdir(REPO)
    assert table_main([str(folder.relative_to(REPO)), "--paper", "--out", str(tmp_path)]) == 0
    for name in ("table1.md", "table1.csv", "table1.tex"):
        assert (tmp_path / name).read_text() == (folder / name).read_text(), (
            f"{folder.name}/{name} is stale: rerun make table1 RUNS={folder.relative_to(REPO)}"
        )
    md = (folder / "table1.md").read_text()
    header = [c.strip() for c in md.split("\n| Group ")[1].split("\n")[0].split("|")][:9]
    assert header == [
        "",
        "Method",
        "Final",
        "Area",
        "n",
        "Time",
        "Acq. time",
        "Param",
        "Best (test-selected)",
    ]
    figures = list((folder / "figures").rglob("*.png"))
    assert figures and all(f.stat().st_size > 10_000 for f in figures)
    assert all(f.with_suffix(".pdf").is_file() for f in figures), (
        f"rerun make figures RUNS={folder.relative_to(REPO)}"
    )


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in r.items() if k in ("test_acc", "acquire_s", "iteration")}
        for r in read_csv(run_dir / "metrics.csv")
    ]


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_final_area_and_acquisition_ratio_are_those_of_metrics_csv(folder: Path):
    """The new columns, recomputed here straight from each run's metrics.csv (csv module, no pandas)."""
    table = pd.read_csv(folder / "table1.csv")
    runs = aggregate(folder).table
    acquire, cpus = {}, {}
    for label, part in runs.groupby("label"):
        rows = [_metrics(r.path) for r in part["run"]]
        row = table[table["label"] == label].iloc[0]
        assert row.n == len(rows)
        assert row.final_acc_mean == pytest.approx(
            statistics.mean(m[-1]["test_acc"] for m in rows), abs=1e-9
        )
        areas = [statistics.mean(r["test_acc"] for r in m) for m in rows]
        assert row.area_mean == pytest.approx(statistics.mean(areas), abs=1e-9)
        if len(areas) > 1:
            assert row.area_std == pytest.approx(statistics.stdev(areas), abs=1e-9)
        else:  # one seed: no spread to report
            assert pd.isna(row.area_std)
        acquire[label] = statistics.mean(
            r["acquire_s"] for m in rows for r in m if r["iteration"] >= 1
        )
        cpus[label] = {
            json.loads((r.path / "summary.json").read_text()).get("cpu") for r in part["run"]
        }
    for row in table.itertuples():
        same_cpu = "Random" in cpus and len(cpus[row.label] | cpus["Random"]) == 1
        if row.label == "Random":
            assert row.acq_time_ratio == 1.0
        elif same_cpu and None not in cpus["Random"]:
            assert row.acq_time_ratio == pytest.approx(
                acquire[row.label] / acquire["Random"], rel=1e-9
            )
        else:  # no Random, or not one recorded CPU model: no ratio across CPUs
            assert pd.isna(row.acq_time_ratio) and pd.isna(row.time_ratio)
