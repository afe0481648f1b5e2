"""The rows of the paper's Table 1: label, group, the (acquisition, augment) pair, paper values.

Each fact lives in one place. ``paper_table1.csv`` beside this module is the paper's table:
every row's key, group and label in the paper's order, with its values (transcribed from the
paper's Table 1; the paper's PDF text shifts the group labels down by one row, the groups here
are the paper's own). ``conf/method/<key>.yaml`` says which acquisition and augment the row
runs (the ``method=`` option); the paper's sweep presets run every file of ``conf/method/``
but the rows beyond the paper (``glob(*,exclude=[...])``). The aggregator names and orders table rows from here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional, cast

from omegaconf import OmegaConf

from ..conf import CONF_DIR

DATASETS = ("fashion", "svhn", "cifar10")  # the paper's dataset columns, in its order
BEYOND_GROUP = "Beyond the paper"  # rows the paper does not have (beyond_rows.csv)
GROUPS = ("Baselines", "Entropy-based", "VAAL-based", "VarRatio-based", BEYOND_GROUP)
OTHER_GROUP = "Other"  # runs whose (acquisition, augment) pair is not a Table 1 row


@dataclass(frozen=True)
class Row:
    key: str
    group: str
    label: str
    acquisition: str
    augment: str
    paper_acc: dict[str, tuple[float, float]]  # dataset -> (mean, std) in %
    paper_time: Optional[float]  # iteration time relative to Random
    paper_param: str  # as printed in the paper: "-", "77K", "13M"


def row_key(acquisition: str, augment: str) -> str:
    return acquisition if augment == "none" else f"{acquisition}_{augment}"


@lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
    """Every row of Table 1 in the paper's order, then the rows beyond the paper
    (``beyond_rows.csv``: key, group, label), which have no paper values."""
    text = resources.files(__package__).joinpath("paper_table1.csv").read_text()
    out = []
    for r in csv.DictReader(text.splitlines()):
        assert r["group"] in GROUPS, r
        acquisition, augment = method_pair(r["key"])
        assert r["key"] == row_key(acquisition, augment), (r["key"], acquisition, augment)
        out.append(
            Row(
                key=r["key"],
                group=r["group"],
                label=r["label"],
                acquisition=acquisition,
                augment=augment,
                paper_acc={d: (float(r[d]), float(r[f"{d}_std"])) for d in DATASETS},
                paper_time=float(r["time"]) if r["time"] else None,
                paper_param=r["param"],
            )
        )
    beyond = resources.files(__package__).joinpath("beyond_rows.csv").read_text()
    for r in csv.DictReader(beyond.splitlines()):
        assert r["group"] == BEYOND_GROUP, r
        acquisition, augment = method_pair(r["key"])
        out.append(Row(r["key"], r["group"], r["label"], acquisition, augment, {}, None, ""))
    return tuple(out)


def method_pair(key: str) -> tuple[str, str]:
    """The (acquisition, augment) that ``conf/method/<key>.yaml`` selects."""
    path = CONF_DIR / "method" / f"{key}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"Table 1 row {key!r} has no method config; add {path}")
    choices = {}
    # a method config is a mapping
    method = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(path)))
    for entry in method.get("defaults", []):
        for option, value in entry.items() if isinstance(entry, dict) else ():
            choices[option.removeprefix("override ").strip("/")] = value
    return choices["acquisition"], choices["augment"]


def position(key: str) -> int:
    """A row's place in the paper's order; rows outside Table 1 come last."""
    keys = [r.key for r in rows()]
    return keys.index(key) if key in keys else len(keys)


def row_for(acquisition: str, augment: str) -> Row:
    """The Table 1 row of an (acquisition, augment) pair; a pair outside the table gets an "Other" row."""
    for r in rows():
        if (r.acquisition, r.augment) == (acquisition, augment):
            return r
    return Row(
        key=row_key(acquisition, augment),
        group=OTHER_GROUP,
        label=acquisition if augment == "none" else f"{acquisition} + {augment}",
        acquisition=acquisition,
        augment=augment,
        paper_acc={},
        paper_time=None,
        paper_param="",
    )
