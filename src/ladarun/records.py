"""What a run leaves on disk: metrics.csv, one row per iteration, and summary.json."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

BASE_COLUMNS = (
    "iteration",
    "n_labeled",
    "test_acc",
    "best_acc",
    "train_loss",
    "acquire_s",
    "train_s",
    "eval_s",
    "iter_s",
)


class MetricsWriter:
    """Writes metrics.csv row by row, flushed to disk as each iteration ends.

    ``resume_after=j`` continues an existing file: rows of iterations after ``j`` (written
    before a crash, but not covered by the checkpoint) are dropped first, by rewriting the
    file atomically, so a resumed run never has a duplicated or missing iteration.
    """

    def __init__(self, path: Path, extra_columns: Iterable[str] = (), resume_after: Optional[int] = None):
        self.path = Path(path)
        self.columns = list(BASE_COLUMNS) + [c for c in extra_columns if c not in BASE_COLUMNS]
        if resume_after is not None and self.path.exists():
            with open(self.path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("iteration", "").isdigit() and int(r["iteration"]) <= resume_after]
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        else:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
            self._writer.writeheader()
        self._sync()

    def write(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"metrics row has columns not declared up front: {sorted(unknown)}")
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def learning_curve_area(path: Path) -> float:
    """Area under the learning curve: the mean test accuracy over iterations 0..N of a metrics.csv.

    The mean of the ``test_acc`` column as written (a curve on a grid of equal steps, so the mean
    is the normalised area); ``ladarun-table`` computes the same number from the same file.
    """
    with open(path, newline="") as f:
        accs = [float(r["test_acc"]) for r in csv.DictReader(f)]
    return sum(accs) / len(accs) if accs else float("nan")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
