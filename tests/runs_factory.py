"""Hand-written run directories, laid out as ladarun writes them, for the table and figure tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ladarun.rundir.metrics import BASE_COLUMNS

PROTOCOLS = {
    "quick": {"name": "quick", "iterations": 2, "query": 10, "epochs": 10},
    "paper": {"name": "paper", "iterations": 2, "query": 10, "epochs": 50},
}


def write_run(
    root: Path,
    *,
    acquisition: str,
    augment: str = "none",
    seed: int = 0,
    dataset: str = "fashion",
    protocol: str = "quick",
    accs: Sequence[float] = (60.0, 70.0, 80.0),
    iter_s: Sequence[float] = (50.0, 1.0, 1.0),
    acquire_s: Optional[Sequence[float]] = None,
    finished: bool = True,
    aux_params: int = 0,
    extra: Optional[dict[str, Sequence[float]]] = None,
    folder: Optional[str] = None,
    config: bool = True,
    settings: Optional[dict[str, dict]] = None,
    cpu: Optional[str] = None,
    experiment: Optional[str] = None,
) -> Path:
    """A run with ``len(accs)`` iterations (0..n-1); ``finished`` writes summary.json."""
    run = root / (folder or f"{protocol}/{dataset}/{acquisition}-{augment}/seed{seed}")
    (run / ".hydra").mkdir(parents=True)
    cfg = {
        "dataset": {"name": dataset},
        "model": {"name": "cnn", "width": 16},
        "acquisition": {"name": acquisition},
        "augment": {"name": augment},
        "protocol": PROTOCOLS[protocol],
        "seed": seed,
        "data_dir": "${oc.env:LADARUN_DATA,./data}",
    }
    if experiment:
        cfg["experiment"] = {"name": experiment}
    for group, values in (
        settings or {}
    ).items():  # e.g. {"augment": {"tau_activation": "softplus"}}
        cfg[group] = {**cfg[group], **values}
    if config:
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    extra = extra or {}
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(BASE_COLUMNS) + list(extra))
        writer.writeheader()
        best = -1.0
        for it, acc in enumerate(accs):
            best = max(best, acc)
            writer.writerow(
                {
                    "iteration": it,
                    "n_labeled": 20 + 10 * it,
                    "test_acc": acc,
                    "best_acc": best,
                    "train_loss": 0.5,
                    "acquire_s": acquire_s[it] if acquire_s else (0.0 if it == 0 else 0.1),
                    "train_s": 0.5,
                    "eval_s": 0.1,
                    "iter_s": iter_s[it],
                    **{k: ("" if it == 0 else v[it]) for k, v in extra.items()},
                }
            )
    if finished:
        summary = {
            "best_acc": max(accs),
            "final_acc": accs[-1],
            "iterations": len(accs) - 1,
            "aux_params": aux_params,
            "device": "cpu (2 threads)",
            "resumed_at": [],
        }
        if cpu:
            summary["cpu"] = cpu
        if config:
            summary["run"] = {"config": cfg}
        (run / "summary.json").write_text(json.dumps(summary))
    return run
