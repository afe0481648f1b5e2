"""The committed replication runs (results/<name>/) regenerate their committed tables exactly."""
from pathlib import Path

import pytest

from conftest import REPO
from ladarun.aggregate import main as table_main

RESULTS = sorted(p for p in (REPO / "results").glob("*") if (p / "table1.md").exists())


def test_results_folders_exist():
    assert RESULTS, "results/ holds no committed replication (results/<name>/table1.md)"


@pytest.mark.parametrize("folder", RESULTS, ids=[p.name for p in RESULTS])
def test_committed_runs_regenerate_the_committed_table(folder: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # as `make table1 RUNS=results/<name>` runs it: the heading names the folder
    assert table_main([str(folder.relative_to(REPO)), "--paper", "--out", str(tmp_path)]) == 0
    for name in ("table1.md", "table1.csv", "table1.tex"):
        assert (tmp_path / name).read_text() == (folder / name).read_text(), f"{folder.name}/{name} is stale: rerun make table1 RUNS={folder.relative_to(REPO)}"
    figures = list((folder / "figures").rglob("*.png"))
    assert figures and all(f.stat().st_size > 10_000 for f in figures)
