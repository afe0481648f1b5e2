"""``queries.csv``: which points a run labeled, when, and why.

One row per labeled point: its index in the training set, its label, the iteration that labeled
it (0 = the initial set), the method's acquisition score when it has one (the ranked score: the
entropy, the variation ratio, BALD's mutual information, VAAL's 1 - D(mu), LADA's Eq. 7 / Eq. 15
objective) and, for methods that label pairs (LADA's InfoMixup), the index of its partner.
Within an iteration the rows follow the order of the choice (best score first).

The file is rewritten whole and atomically as each iteration ends (it holds at most a few
thousand rows), so a kill never leaves half a row; a resumed run keeps the rows of the
iterations its checkpoint covers, and refuses to go on when they are missing or disagree with
the checkpoint's ``labeled_at`` (a resume never papers over a lost or foreign file).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import torch

from ..errors import DamagedFileError
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
        """Keep the file's rows of iterations 0..resume_after, which must match the checkpoint's
        ``labeled_at`` (rows of later iterations, written before a crash, are dropped); a file
        that is missing or disagrees with the checkpoint stops the resume (DamagedFileError)."""
        fix = (
            "put back the run's own queries.csv, or delete checkpoint.pt (and the run's files) to "
            "run this configuration again from the start"
        )
        if not self.path.is_file():
            raise DamagedFileError(
                f"{self.path} is missing, but checkpoint.pt has finished iterations 0..{resume_after}; {fix}"
            )
        by_iteration: dict[int, list[dict[str, str]]] = {}
        try:
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    it = row.get("iteration") or ""
                    if it.isdigit() and int(it) <= resume_after:
                        by_iteration.setdefault(int(it), []).append(row)
        except (csv.Error, UnicodeDecodeError) as err:
            raise DamagedFileError(f"{self.path} cannot be read ({err}); {fix}") from None
        for it in range(resume_after + 1):
            truth = torch.nonzero(labeled_at == it).flatten().tolist()
            kept = by_iteration.get(it, [])
            indices = sorted(int(r["index"]) for r in kept if (r.get("index") or "").isdigit())
            if indices != truth:
                raise DamagedFileError(
                    f"{self.path} disagrees with checkpoint.pt about iteration {it} (it lists "
                    f"{len(kept)} points, the checkpoint {len(truth)}); {fix}"
                )
            self.rows += [{k: r.get(k) or "" for k in COLUMNS} for r in kept]


def read_queries(path: Path) -> list[dict[str, str]]:
    """The rows of a queries.csv."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
