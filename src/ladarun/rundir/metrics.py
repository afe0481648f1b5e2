"""``metrics.csv``: one row per iteration, flushed to disk as each iteration ends."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ..errors import DamagedFileError, DiskFullError
from .files import atomic_write, disk_full, disk_full_message, open_run_file

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

    def __init__(
        self, path: Path, extra_columns: Iterable[str] = (), resume_after: Optional[int] = None
    ):
        self.path = Path(path)
        self.columns = list(BASE_COLUMNS) + [c for c in extra_columns if c not in BASE_COLUMNS]
        if resume_after is not None:
            kept = self._rows_up_to(resume_after)
            with atomic_write(self.path) as f:
                writer = csv.DictWriter(
                    f, fieldnames=self.columns, restval="", extrasaction="ignore"
                )
                writer.writeheader()
                writer.writerows(kept)
            self._file = open_run_file(self.path, "a")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        else:
            self._file = open_run_file(self.path, "w")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
            self._writer.writeheader()
        self._sync()

    def _rows_up_to(self, last: int) -> list[dict[str, str]]:
        """The rows of iterations 0..``last`` (those the checkpoint covers), all present and
        readable, or DamagedFileError: a resume must never drop a finished iteration silently."""
        fix = (
            "delete it and checkpoint.pt to run this configuration again from the start, or put "
            "back a good copy"
        )
        if not self.path.is_file():
            raise DamagedFileError(
                f"{self.path} is missing, but checkpoint.pt has finished iterations 0..{last}; "
                f"put back metrics.csv, or delete checkpoint.pt to run this configuration again "
                "from the start"
            )
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (csv.Error, UnicodeDecodeError) as err:
            raise DamagedFileError(f"{self.path} cannot be read ({err}); {fix}") from None
        kept = [
            r for r in rows if (r.get("iteration") or "").isdigit() and int(r["iteration"]) <= last
        ]
        found = [int(r["iteration"]) for r in kept]
        if found != list(range(last + 1)) or any(
            None in r.values() or "" in (r.get("test_acc"), r.get("n_labeled")) for r in kept
        ):
            raise DamagedFileError(
                f"{self.path} does not hold iterations 0..{last} whole, which checkpoint.pt has "
                f"finished (it has {found if len(found) < 12 else str(found[:12]) + '...'}); {fix}"
            )
        return kept

    def write(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"metrics row has columns not declared up front: {sorted(unknown)}")
        try:
            self._writer.writerow({k: _fmt(v) for k, v in row.items()})
            self._sync()
        except OSError as err:
            if disk_full(err, self.path.parent):
                raise DiskFullError(disk_full_message(self.path)) from None
            raise

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def learning_curve_area(path: Path) -> float:
    """Area under the learning curve: the mean test accuracy over iterations 0..N of a metrics.csv.

    The mean of the ``test_acc`` column as written (a curve on a grid of equal steps, so the mean
    is the normalised area); ``ladarun-table`` computes the same number from the same file.
    """
    with open(path, newline="") as f:
        accs = [float(r["test_acc"]) for r in csv.DictReader(f)]
    return sum(accs) / len(accs) if accs else float("nan")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
