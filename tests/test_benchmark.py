"""The benchmark runs end to end in a tiny configuration (timings are not asserted)."""

import json
from pathlib import Path

from iteration import implemented_rows, main


def test_benchmark_runs_end_to_end_and_writes_its_report(tmp_path):
    main(
        [
            "--repeats",
            "1",
            "--labeled",
            "40",
            "--rows",
            "LADA_EntMix^fixed",
            "--out",
            str(tmp_path),
            "--",
            "dataset=synthetic",
            "protocol=smoke",
            "protocol.epochs=1",
        ]
    )
    md = (tmp_path / "bench.md").read_text()
    for heading in ("Time column", "Loop overhead", "Peak memory"):
        assert heading in md
    report = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert report["threads"] >= 1 and f"({report['threads']} intra-op threads)" in md
    assert [r["row"] for r in report["time"]] == ["LADA_EntMix^fixed"]
    for r in report["time"]:
        assert (
            r["ratio_median"] > 0
            and r["acquire_s"] > 0
            and r["paper"] == 1.06
            and r["target"] == 1.03
        )
    assert report["overhead"]["ratio"] > 0
    assert {m["row"] for m in report["memory"]} == {"LADA_EntMix^fixed"}
    assert all(m["peak_rss_mib"] > 50 for m in report["memory"])
    if Path(
        "/proc/self/clear_refs"
    ).exists():  # Linux: the iteration's own peak, not the data loading's
        assert all(
            m["iteration_peak_rss_mib"] >= 0.9 * m["rss_before_mib"] > 50 for m in report["memory"]
        )
        assert "iteration peak RSS MiB" in md


def test_only_rows_with_configs_are_benchmarked():
    labels = {r.label for r in implemented_rows()}
    assert {
        "Random",
        "Max Entropy",
        "Var Ratio",
        "LADA_EntMix",
        "LADA_VarMix",
        "Ent w. ManifoldMixup",
    } <= labels
    for r in implemented_rows():
        assert r.target <= r.paper_time


def test_every_implemented_row_runs_one_benchmark_iteration():
    """Each row's iteration starts from the shared state in its own model config (BALD adds head dropout)."""
    import torch

    from iteration import Bench

    bench = Bench(
        ["dataset=synthetic", "protocol=smoke", "protocol.epochs=1"],
        labeled=40,
        device=torch.device("cpu"),
    )
    for row in implemented_rows():
        timing = bench.iteration(row)
        assert timing["iter_s"] >= timing["acquire_s"] > 0, row.label


def test_switch_section_times_each_setting_against_the_baseline():
    import torch

    from iteration import CPU_SWITCHES, switch_section

    out = switch_section(
        ["dataset=synthetic", "protocol=smoke", "protocol.epochs=1"],
        40,
        torch.device("cpu"),
        1,
        {k: CPU_SWITCHES[k] for k in ("baseline (fp32, NCHW, eager)", "channels_last")},
        log=lambda s: None,
    )
    assert {(o["switches"], o["row"]) for o in out} == {
        (s, r)
        for s in ("baseline (fp32, NCHW, eager)", "channels_last")
        for r in ("Random", "Max Entropy", "LADA_EntMix")
    }
    assert all(o["iter_s"] > 0 for o in out)
    assert all(o["speedup"] == 1.0 for o in out if o["switches"].startswith("baseline"))


def test_estimator_section_times_both_estimators_of_each_look_ahead_row(tmp_path):
    main(
        [
            "--sections",
            "estimator",
            "--repeats",
            "1",
            "--labeled",
            "40",
            "--out",
            str(tmp_path),
            "--note",
            "machine shared with a sweep",
            "--",
            "dataset=synthetic",
            "protocol=smoke",
            "protocol.epochs=1",
        ]
    )
    report = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    rows = [(e["row"], e["estimator"]) for e in report["estimator"]]
    assert rows == [
        (row, estimator)
        for row in ("LADA_EntMix", "LADA_VaalMix", "LADA_VarMix")
        for estimator in ("mc", "tabulated")
    ]
    for e in report["estimator"]:
        assert e["acquire_s"] > 0 and e["ratio_median"] > 0
        if e["estimator"] == "mc":
            assert e["acquire_speedup"] == 1.0
    md = (tmp_path / "bench.md").read_text()
    assert "Look-ahead estimators" in md and "machine shared with a sweep" in md


def test_the_beyond_benchmark_runs_end_to_end_and_writes_its_report(tmp_path):
    import beyond

    beyond.main(
        [
            "--repeats",
            "1",
            "--labeled",
            "24",
            "--out",
            str(tmp_path),
            "--embedding-cache",
            str(tmp_path / "cache"),
            "--",
            "dataset=digits",
            "protocol=smoke",
        ]
    )
    report = json.loads(next(tmp_path.glob("beyond-*.json")).read_text())
    timed = [r for r in report["rows"] if "row" in r]
    assert [r["row"] for r in timed] == [r.label for r in beyond.ROWS]
    assert all(r["ratio_median"] > 0 and r["acquire_s"] > 0 for r in timed)
    assert {r["row"] for r in timed if r["target"] == 3.0} == set(beyond.TARGET_ROWS)
    embedding = next(r["embedding"] for r in report["rows"] if "embedding" in r)
    assert embedding["simclr_build_s"] > 0 and embedding["delta"] > 0
    assert "| 24 | TypiClust |" in (tmp_path / "beyond.md").read_text()
