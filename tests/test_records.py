"""summary.json's area under the learning curve, and the same number read back by ladarun-table."""

import json

import pytest
import torch

from helpers import read_csv, toy_run
from ladarun.report.runs import load_run
from ladarun.rundir.metrics import MetricsWriter, learning_curve_area
from runs_factory import write_run


def test_learning_curve_area_is_the_mean_test_accuracy_over_iterations_0_to_n(tmp_path):
    with MetricsWriter(tmp_path / "metrics.csv") as writer:
        for it, acc in enumerate((40.0, 51.0, 75.5)):
            writer.write({"iteration": it, "test_acc": acc})
    assert learning_curve_area(tmp_path / "metrics.csv") == pytest.approx(55.5)
    assert learning_curve_area(tmp_path / "metrics.csv") == pytest.approx(55.5)


def test_summary_json_has_the_area_and_the_table_reads_the_same(tmp_path):
    toy_run(tmp_path)
    accs = [float(r["test_acc"]) for r in read_csv(tmp_path / "metrics.csv")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["area"] == pytest.approx(sum(accs) / len(accs))
    # the CPU model and torch's kernel level, as in "AMD EPYC 7B13 (AVX2)"
    assert summary["cpu"].endswith(f"({torch.backends.cpu.get_cpu_capability()})")
    assert len(summary["cpu"]) > len(" (AVX2)")


def test_runs_written_before_the_area_existed_get_it_from_metrics_csv(tmp_path):
    path = write_run(tmp_path, acquisition="ent", accs=(50.0, 60.0, 58.0))
    summary = json.loads((path / "summary.json").read_text())
    assert "area" not in summary
    loaded = load_run(path)
    assert (
        loaded.area == pytest.approx(56.0) and loaded.final_acc == 58.0 and loaded.best_acc == 60.0
    )
