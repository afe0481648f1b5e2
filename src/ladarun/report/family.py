"""The primary family of comparisons a sweep preset declares, before its runs are made.

A preset of conf/experiment/ names it under ``experiment.primary``:

    experiment:
      name: table1_budget
      primary:
        rows: [ent_infomixup_fixed, ent_infomixup, var_infomixup_fixed, var_infomixup]
        against: [random, base]     # a row key, or "base": the row's own acquisition alone
        metrics: [final, area]

Every row is compared with every entry of ``against`` on every metric; ``ladarun-compare
--primary`` tests exactly these comparisons and Holm-corrects within them. The preset file is
read by the name each run records (``experiment.name``), so the declaration is the preset's text,
not something a run could change after the fact (docs/methods.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..conf import CONF_DIR
from .cells import METRICS, AggregateError
from .rows import method_pair
from .runs import conf_raw

BASE = "base"


@dataclass(frozen=True)
class FamilySpec:
    preset: str
    rows: tuple[str, ...]
    against: tuple[str, ...]
    metrics: tuple[str, ...]

    def pairs(self) -> list[tuple[str, str]]:
        """(row, other) of every declared comparison, in the declared order; never a row with
        itself (a baseline's base is itself)."""
        out = []
        for row in self.rows:
            for other in self.against:
                pair = (row, base_of(row) if other == BASE else other)
                if pair not in out and pair[0] != pair[1]:  # Margin's base is Margin
                    out.append(pair)
        return out

    def describe(self) -> str:
        against = " and ".join(
            "its base acquisition" if a == BASE else f"`{a}`" for a in self.against
        )
        metrics = " and ".join(dict(METRICS)[m] for m in self.metrics)
        return f"each of {', '.join(f'`{r}`' for r in self.rows)} against {against}, on {metrics}"


def base_of(row: str) -> str:
    """The row of a LADA row's acquisition alone (ent_infomixup -> ent)."""
    try:
        return method_pair(row)[0]
    except (FileNotFoundError, KeyError) as err:
        raise AggregateError(
            f"the primary family names row {row!r}, which has no method config ({err})"
        ) from None


def declared(name: str) -> Optional[FamilySpec]:
    """The primary family of preset ``name`` (None: the preset declares none, or is not in conf/)."""
    config = conf_raw(f"experiment/{name}.yaml") or {}
    primary = (config.get("experiment") or {}).get("primary")
    if not primary:
        return None
    fields = {
        k: tuple(str(v) for v in primary.get(k) or ()) for k in ("rows", "against", "metrics")
    }
    unknown = [m for m in fields["metrics"] if m not in dict(METRICS)]
    if unknown or not all(fields.values()):
        raise AggregateError(
            f"conf/experiment/{name}.yaml: experiment.primary needs rows, against and metrics "
            f"(metrics among {', '.join(dict(METRICS))}); got {primary}"
        )
    return FamilySpec(name, fields["rows"], fields["against"], fields["metrics"])


def declaring_presets() -> list[str]:
    """The presets of conf/experiment/ that declare a primary family."""
    names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    return [n for n in names if declared(n) is not None]
