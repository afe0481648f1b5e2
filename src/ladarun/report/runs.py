"""Read the run directories under a folder: each run's config, metrics.csv and state.

A run directory is any folder holding ``metrics.csv``, ``summary.json``, ``failed.json``,
``run_config.json`` or ``.hydra/config.yaml``. What a run *is* (dataset, Table 1 row, protocol,
seed) comes from its config, never from the folder's name. Nothing here raises on one bad
run: a run that cannot be used carries a ``problem`` saying why and how to fix it, so the
table lists it instead of silently dropping it (or failing for everyone).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, cast

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from ..conf import CONF_DIR
from ..rundir.identity import INDIRECT_KEYS, OPERATIONAL_KEYS, flatten
from ..rundir.metrics import BASE_COLUMNS
from .rows import Row, row_for

SUMMARY = "summary.json"
MARKERS = ("metrics.csv", SUMMARY, "failed.json", "run_config.json")
# Config keys that do not change what a run measures (rundir.identity's OPERATIONAL_KEYS and INDIRECT_KEYS,
# plus the seed and the resolved device, which summary.json records), left out when comparing
# two runs' settings.
NOT_SETTING = {*OPERATIONAL_KEYS, *INDIRECT_KEYS, "seed", "device", "hydra"}
_GROUPS = ("dataset", "model", "acquisition", "augment", "optimizer", "scheduler")


@dataclass
class Run:
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: Optional[pd.DataFrame] = None
    summary: Optional[dict[str, Any]] = None
    failure: Optional[dict[str, Any]] = None
    checkpoint: bool = False
    problem: Optional[str] = None  # set when the run cannot be used; says how to fix it

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.problem is None

    @property
    def status(self) -> str:
        if self.problem is not None:
            return "unusable"
        if self.summary is not None:
            return "finished"
        return "failed" if self.failure is not None else "incomplete"

    # --- what the config says ---------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.config["dataset"]["name"]

    @property
    def row(self) -> Row:
        return row_for(self.config["acquisition"]["name"], self.config["augment"]["name"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def protocol(self) -> dict[str, Any]:
        return self.config["protocol"]

    @property
    def setting(self) -> dict[str, Any]:
        """What runs must share to be averaged together: the protocol and the model's name.

        A protocol key the run's config lacks (written before the key existed, as
        ``protocol.val_size`` before 0.4.0) counts as the package's default, so such a run and
        a newer one of the same setting share a section."""
        protocol = {**protocol_defaults(self.protocol.get("name")), **self.protocol}
        return {"protocol": protocol, "model": self.config.get("model", {}).get("name")}

    @property
    def details(self) -> dict[str, Any]:
        """Everything in the config that changes results, except dataset, row and seed.

        The acquisition and augment names make the row; their other settings are details, so an
        ablation such as ``augment.tau_activation=softplus`` is its own variant of the row.
        """
        details = {
            k: v
            for k, v in self.config.items()
            if k not in NOT_SETTING | {"acquisition", "augment", "dataset"}
        }
        for group in ("acquisition", "augment"):
            settings = {k: v for k, v in (self.config.get(group) or {}).items() if k != "name"}
            if settings:
                details[group] = settings
        return details

    @property
    def default_details(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """:attr:`details` of the package's default config for this run's choices, flattened:
        (unresolved, resolved). Empty when conf/ cannot be read; see :func:`default_config`."""
        config = default_config(self.config)
        if not config:
            return {}, {}
        unresolved = Run(self.path, config=config).details
        try:
            resolved_config = cast(
                dict[str, Any], OmegaConf.to_container(OmegaConf.create(config), resolve=True)
            )
            resolved = Run(self.path, config=resolved_config).details
        except OmegaConfBaseException:
            resolved = unresolved
        return flatten(unresolved), flatten(resolved)

    @property
    def iterations_done(self) -> int:
        """Finished iterations after the initial training (-1: not even that)."""
        if self.metrics is None or self.metrics.empty:
            return -1
        return int(self.metrics["iteration"].iloc[-1])

    @property
    def best_acc(self) -> Optional[float]:
        if self.summary is not None:
            return float(self.summary["best_acc"])
        if self.metrics is not None and not self.metrics.empty:
            return float(self.metrics["best_acc"].max())
        return None

    @property
    def final_acc(self) -> Optional[float]:
        """Test accuracy after the last iteration, from metrics.csv (runs of any version have it)."""
        if self.metrics is None or self.metrics.empty:
            return None
        return float(self.metrics["test_acc"].iloc[-1])

    @property
    def area(self) -> Optional[float]:
        """Area under the learning curve: the mean test accuracy over iterations 0..N of metrics.csv.

        Computed here rather than read from summary.json, so runs written before summary.json
        had an ``area`` get the same number (records.learning_curve_area, from the same file).
        """
        if self.metrics is None or self.metrics.empty:
            return None
        return float(self.metrics["test_acc"].mean())

    @property
    def best_val_test_acc(self) -> Optional[float]:
        """Test accuracy at the iteration of best validation accuracy (ties: the later), as
        summary.json's ``best_val_test_acc``; None for runs without a validation set."""
        if self.metrics is None or "val_acc" not in self.metrics:
            return None
        scored = self.metrics.dropna(subset=["val_acc"])
        if scored.empty:
            return None
        at_best = scored[scored["val_acc"] == scored["val_acc"].max()]
        return float(at_best["test_acc"].iloc[-1])

    @property
    def aux_params(self) -> Optional[int]:
        value = (self.summary or {}).get("aux_params")
        return None if value is None else int(value)

    @property
    def device(self) -> Optional[str]:
        return (self.summary or {}).get("device")

    @property
    def cpu(self) -> Optional[str]:
        """The CPU model (summary.json's ``cpu``; older runs do not record it)."""
        return (self.summary or {}).get("cpu")


def curve_stats(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Mean, sample std and count of column ``y`` over runs' metrics at each value of ``x``
    (a point's mean is over the runs that reached it)."""
    stacked = pd.concat([f[[x, y]].dropna() for f in frames])
    return stacked.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()


@lru_cache(maxsize=None)
def conf_raw(relpath: str) -> Optional[dict[str, Any]]:
    """A file of conf/, unresolved, defaults list included; None when it is not there."""
    path = CONF_DIR / relpath
    if not path.is_file():
        return None
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (YAMLError, OmegaConfBaseException):
        return None
    if not isinstance(config, dict):
        return None
    return cast(dict[str, Any], config)  # YAML mapping keys are strings


def _conf_file(relpath: str) -> Optional[dict[str, Any]]:
    """A file of conf/, unresolved, without its defaults list; None when it is not there."""
    config = conf_raw(relpath)
    return None if config is None else {k: v for k, v in config.items() if k != "defaults"}


def _protocol_preset(name: Any, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """conf/protocol/<name>.yaml over the protocol presets its defaults list loads first
    (``paper_budget`` loads ``quick``, then sets its own values: its ``_self_`` comes last)."""
    config = conf_raw(f"protocol/{name}.yaml")
    if config is None or name in seen:
        return {}
    parts = []
    for entry in config.get("defaults") or []:
        # another protocol preset, named relatively ("quick") or absolutely ("/protocol/quick")
        if isinstance(entry, str) and entry != "_self_":
            other = entry.removeprefix("/protocol/")
            if not other.startswith("/"):
                parts.append(_protocol_preset(other, (*seen, str(name))))
    own = {k: v for k, v in config.items() if k != "defaults"}
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.merge(*parts, own), resolve=False))


@lru_cache(maxsize=None)
def _protocol_defaults(name: Optional[str]) -> str:
    return json.dumps(default_config({"protocol": {"name": name}}).get("protocol") or {})


def protocol_defaults(name: Optional[str]) -> dict[str, Any]:
    """The protocol values ladarun composes for protocol ``name`` with no overrides (empty when
    conf/ is not beside the package)."""
    return cast(dict[str, Any], json.loads(_protocol_defaults(name)))


def default_config(config: dict[str, Any]) -> dict[str, Any]:
    """What ladarun composes with no overrides for the choices ``config`` made.

    conf/config.yaml, then conf/<group>/<name>.yaml for the run's dataset, model, acquisition
    and augment names, then conf/protocol_defaults.yaml and its protocol preset merged over them
    (a global package: ``protocol`` keys, ``aux`` and the model's dropout; a preset that loads
    another, as ``paper_budget`` loads ``quick``, over that one).
    Unresolved, as Hydra writes .hydra/config.yaml; empty when conf/ is not beside the package
    (then no setting counts as the default one).
    """
    root = _conf_file("config.yaml")
    if root is None:
        return {}
    out = {k: v for k, v in root.items() if k != "hydra"}
    for group in _GROUPS:
        name = (config.get(group) or {}).get("name")
        out[group] = dict(_conf_file(f"{group}/{name}.yaml") or {"name": name})
    shape = {"protocol": _conf_file("protocol_defaults.yaml") or {}}
    preset = _protocol_preset((config.get("protocol") or {}).get("name"))
    return cast(
        dict[str, Any], OmegaConf.to_container(OmegaConf.merge(out, shape, preset), resolve=False)
    )


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Hidden folders (.hydra, .submitit) hold a run's bookkeeping, never runs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(m in filenames for m in MARKERS) or (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
    return sorted(found)


def _read_config(path: Path, summary: Optional[dict]) -> dict[str, Any]:
    """The run's config: Hydra's .hydra/config.yaml, else the copies ladarun writes itself."""
    hydra_config = path / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        # data_dir may be ${oc.env:...}
        config = OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=False)
        if not isinstance(config, dict):
            raise ValueError(".hydra/config.yaml is not a mapping")
        return cast(dict[str, Any], config)  # YAML mapping keys are strings
    recorded = (summary or {}).get("run")
    if isinstance(recorded, dict) and isinstance(recorded.get("config"), dict):
        return recorded["config"]
    if (path / "run_config.json").is_file():
        config = json.loads((path / "run_config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError("run_config.json is not a mapping")
        return cast(dict[str, Any], config)
    return {}


def _read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv as numbers; ValueError saying what is wrong when it is truncated or corrupted."""
    try:
        # as text: a "nan" the run wrote must stay apart from a cell that does not parse
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError("metrics.csv is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"metrics.csv cannot be parsed ({str(err).strip()})") from None
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"metrics.csv lacks the columns {', '.join(missing)}")
    base = df[list(BASE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    written = df["train_loss"].str.strip().str.lower()
    diverged = written.isin(("nan", "inf", "-inf", "infinity", "-infinity")).to_numpy()
    if diverged.any():
        it = int(base.loc[diverged, "iteration"].iloc[0])
        value = df.loc[diverged, "train_loss"].iloc[0]
        raise Diverged(
            f"its training loss is not finite from iteration {it} on (metrics.csv holds {value})"
        )
    bad = base.isna().any(axis=1)
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2  # +1 for the header, +1 for 1-based lines
        raise ValueError(f"metrics.csv is truncated or corrupted at line {line}")
    if list(base["iteration"]) != list(range(len(base))):
        raise ValueError("metrics.csv iterations are not 0, 1, 2, ... in order")
    extra = df.drop(columns=list(BASE_COLUMNS)).apply(pd.to_numeric, errors="coerce")
    return pd.concat([base, extra], axis=1)


class Diverged(ValueError):
    """A run whose loss went to NaN or infinity: its file is whole, its setting is the problem."""


def _read_json(run: Run, name: str) -> Optional[dict[str, Any]]:
    """A JSON file of the run as a mapping, None when absent; ValueError when it is damaged or
    not a mapping (a summary.json of ``{}`` or ``[]``)."""
    path = run.path / name
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{name} is corrupted ({err})") from None
    if not isinstance(value, dict) or (name == SUMMARY and not _number(value.get("best_acc"))):
        shape = (
            type(value).__name__ if not isinstance(value, dict) else "a mapping without best_acc"
        )
        kind = "summary" if name == SUMMARY else "failure record"
        raise ValueError(f"{name} is not a ladarun {kind} (it holds {shape})")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_config(run: Run) -> Optional[str]:
    """What is missing from the run's config for it to be tabled (None: nothing)."""
    if not run.config:
        return (
            "no config (.hydra/config.yaml, summary.json or run_config.json); copy the run with its hidden "
            f".hydra/ folder, or delete {run.path}"
        )
    try:
        for key in ("dataset", "acquisition", "augment"):
            str(run.config[key]["name"])
        run.config["protocol"]["name"]
        int(run.config["protocol"].get("iterations", 0))
        int(run.config["seed"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return (
            f"its config has no usable {err} entry (not a ladarun run?); delete {run.path} or fix "
            "its .hydra/config.yaml"
        )
    return None


def _check_metrics(run: Run) -> Optional[str]:
    """Read metrics.csv into the run; what is wrong with it or with its length (None: nothing)."""
    if (run.path / "metrics.csv").is_file():
        try:
            run.metrics = _read_metrics(run.path / "metrics.csv")
        except Diverged as err:
            return (
                f"{err}: the run trained with a setting under which it diverges (e.g. protocol.lr), and "
                "rerunning it reproduces that; fix the setting and run it again, then delete "
                f"{run.path}"
            )
        except ValueError as err:
            fix = "rerun the same command (the run resumes from its checkpoint or starts again)"
            if run.summary is not None:
                fix = f"restore metrics.csv, or delete {run.path} and rerun the same command"
            return f"{err}; {fix}"
    if run.summary is not None:
        expected = int(run.protocol.get("iterations", run.summary.get("iterations", -1)))
        if run.metrics is None or run.iterations_done != expected:
            got = (
                "no metrics.csv"
                if run.metrics is None
                else f"metrics.csv ends at iteration {run.iterations_done}"
            )
            return (
                f"finished (summary.json) but {got}, expected {expected}; restore metrics.csv, "
                f"or delete {run.path} and rerun the same command"
            )
    return None


def load_run(path: Path) -> Run:
    """The run in ``path``; a run that cannot be used carries a ``problem`` naming the fix."""
    run = Run(path=path, checkpoint=(path / "checkpoint.pt").exists())
    try:
        run.summary = _read_json(run, SUMMARY)
        run.failure = _read_json(run, "failed.json")
    except ValueError as err:
        run.problem = f"{err}; rerun the same command to redo the run, or delete {path}"
        return run
    try:
        run.config = _read_config(path, run.summary)
    except (YAMLError, OmegaConfBaseException, ValueError, json.JSONDecodeError, TypeError) as err:
        run.problem = (
            f"its config is unreadable ({err}); delete {path} or restore .hydra/config.yaml"
        )
        return run
    run.problem = _check_config(run) or _check_metrics(run)
    return run


def load_runs(root: Path) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(root)]
