"""``queries.csv``: which points a run labeled, when, and why.

One row per labeled point: its index in the training set, its label, the iteration that labeled
it (0 = the initial set), the method's acquisition score when it has one (the ranked score: the
entropy, the variation ratio, BALD's mutual information, VAAL's 1 - D(mu), LADA's Eq. 7 / Eq. 15
objective) and, for methods that label pairs (LADA's InfoMixup), the index of its partner.
Within an iteration the rows follow the order of the choice (best score first).

The file is rewritten whole and atomically as each iteration ends (it holds at most a few
thousand rows), so a kill never leaves half a row; a resumed run keeps the rows of the
iterations its checkpoint covers, and rebuilds from the checkpoint's ``labeled_at`` any it
lacks (a run started before queries.csv existed: those rows have no score or partner).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import torch

from .files import atomic_write

COLUMNS = ("index", "label", "iteration", "score", "partner")


def _score(value: float) -> str:
    return f"{value:.6g}"


class QueryLog:
    """The rows of queries.csv, kept in memory and written out after each iteration."""

    def __init__(
        self,
        path: Path,
        labels: torch.Tensor,
        labeled_at: torch.Tensor,
        resume_after: Optional[int] = None,
    ):
        self.path = Path(path)
        self.labels = labels.cpu()
        self.rows: list[dict[str, str]] = []
        self._pending: list[dict[str, str]] = []
        if resume_after is not None:
            self._resume(labeled_at.cpu(), resume_after)
        else:  # the initial set, written with iteration 0's row of metrics.csv
            self.add(0, torch.nonzero(labeled_at.cpu() == 0).flatten())

    def add(
        self,
        iteration: int,
        indices: torch.Tensor,
        scores: Optional[torch.Tensor] = None,
        partners: Optional[torch.Tensor] = None,
    ) -> None:
        """Record the points ``iteration`` labeled (written out by :meth:`write`)."""
        indices = indices.cpu()
        labels = self.labels[indices].tolist()
        score = [""] * len(labels) if scores is None else [_score(s) for s in scores.tolist()]
        partner = (
            [""] * len(labels) if partners is None else [str(p) for p in partners.cpu().tolist()]
        )
        self._pending += [
            {
                "index": str(i),
                "label": str(y),
                "iteration": str(iteration),
                "score": s,
                "partner": p,
            }
            for i, y, s, p in zip(indices.tolist(), labels, score, partner)
        ]

    def write(self) -> None:
        """Write every row recorded so far, replacing the file atomically."""
        self.rows += self._pending
        self._pending = []
        with atomic_write(self.path) as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)

    def _resume(self, labeled_at: torch.Tensor, resume_after: int) -> None:
        """Keep the file's rows of iterations 0..resume_after where they match the checkpoint's
        ``labeled_at``; rebuild the others from it (without score or partner)."""
        by_iteration: dict[int, list[dict[str, str]]] = {}
        if self.path.exists():
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    it = row.get("iteration", "")
                    if it.isdigit() and int(it) <= resume_after:
                        by_iteration.setdefault(int(it), []).append(row)
        for it in range(resume_after + 1):
            truth = torch.nonzero(labeled_at == it).flatten()
            kept = by_iteration.get(it, [])
            if sorted(int(r["index"]) for r in kept) == truth.tolist():
                self.rows += [{k: r.get(k) or "" for k in COLUMNS} for r in kept]
            else:  # missing or not this run's: what the checkpoint knows
                self.add(it, truth)
                self.rows += self._pending
                self._pending = []


def read_queries(path: Path) -> list[dict[str, str]]:
    """The rows of a queries.csv."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
