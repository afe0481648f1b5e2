"""``summary.json``, written last: its presence marks the run finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..runtime import code_version, cpu_name, device_name, library_versions
from .files import SUMMARY, write_json_atomic
from .metrics import learning_curve_area, read_rows
from .state import RunState


@dataclass
class RunSummary:
    best_acc: float
    final_acc: float
    n_labeled: int
    iterations: int
    total_s: float
    device: str
    metrics_path: Path


def write_summary(
    out_dir: Path,
    summary: RunSummary,
    state: RunState,
    aux_params: int,
    device: torch.device,
    run_info: dict[str, Any],
) -> None:
    """summary.json from the finished run: its accuracies, where and with what it ran."""
    write_json_atomic(
        out_dir / SUMMARY,
        {
            "best_acc": summary.best_acc,
            "final_acc": summary.final_acc,
            # mean test accuracy over iterations 0..N (metrics.csv)
            "area": learning_curve_area(summary.metrics_path),
            "best_val_test_acc": best_val_test_acc(summary.metrics_path),
            "n_labeled": summary.n_labeled,
            "iterations": summary.iterations,
            "total_s": round(summary.total_s, 3),
            "resumed_at": state.resumes,
            "aux_params": aux_params,
            "device": device_name(device),
            "cpu": state.cpu or cpu_name(),
            **({"other_cpus": state.other_cpus} if state.other_cpus else {}),
            "data_fingerprint": state.data_fingerprint,
            "versions": library_versions(),
            "code": code_version(),
            "run": run_info,
        },
    )


def best_val_test_acc(metrics_path: Path) -> Optional[float]:
    """The test accuracy at the iteration of best validation accuracy (ties: the later, with
    more labels): model selection by validation instead of by test accuracy (Best). None
    without a validation set (protocol.val_size=0)."""
    scored = [
        (float(r["val_acc"]), i, float(r["test_acc"]))
        for i, r in enumerate(read_rows(metrics_path))
        if r.get("val_acc") not in (None, "")
    ]
    return max(scored)[2] if scored else None
