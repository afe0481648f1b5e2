"""``summary.json``, written last: its presence marks the run finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..runtime import code_version, cpu_name, device_name, library_versions
from .files import SUMMARY, write_json_atomic
from .metrics import learning_curve_area
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
