"""ladarun from Python: ``ladarun.run`` and ``ladarun.load_runs``, for notebooks and scripts.

``run`` composes the packaged config with Hydra's compose API, exactly as the ``ladarun``
command does (same overrides, same run folder from ``hydra.run.dir``, same skip-or-resume
rules), runs it in this process and returns what it wrote. ``load_runs`` reads every run under
a folder into one tidy pandas DataFrame. torch is imported only when a run starts.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

import pandas as pd
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .config import compose, sweep_preset_error
from .errors import ConfigError, DamagedFileError
from .report.runs import Run, flatten, load_run
from .report.runs import load_runs as _load_run_list
from .rundir.files import RunLogHandler, only_hydra_files, remove_fresh

# Hydra's default job log format, so ladarun.log reads the same from the API as from the CLI.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


@dataclass
class RunResult:
    """What one run wrote to its folder: the summary, the metrics and the folder itself."""

    dir: Path
    summary: dict[str, Any]  # summary.json: best/final accuracy, area, device, versions, config
    metrics: pd.DataFrame  # metrics.csv: one row per iteration
    config: dict[str, Any]  # the run's resolved config

    @property
    def best_acc(self) -> float:
        return float(self.summary["best_acc"])

    @property
    def final_acc(self) -> float:
        return float(self.summary["final_acc"])

    @property
    def queries(self) -> Optional[pd.DataFrame]:
        """queries.csv (one row per labeled point) when the run wrote one."""
        path = self.dir / "queries.csv"
        return pd.read_csv(path) if path.is_file() else None


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """ladarun's log records at INFO into ``path`` for the duration, as Hydra's job logging does."""
    logger = logging.getLogger("ladarun")
    handler = RunLogHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def run(overrides: Sequence[str] = ()) -> RunResult:
    """Run ladarun with command-line style ``overrides`` and return what the run wrote.

    ``ladarun.run(["dataset=fashion", "method=ent_infomixup", "seed=1"])`` is
    ``ladarun dataset=fashion method=ent_infomixup seed=1``: the same config, the same run folder
    (relative to the working directory; ``hydra.run.dir=...`` moves it), and a finished run is
    read back instead of run again. Raises ladarun's errors (ConfigError, DataNotFoundError...)
    with the message the CLI prints. Sweeps (``-m``, sweep presets) stay with the CLI: loop
    over ``run`` for several settings.
    """
    from hydra.core.hydra_config import HydraConfig

    from .runner import run_from_config

    overrides = list(overrides)
    cfg = compose(overrides)
    message = sweep_preset_error(cfg, overrides)
    if message is not None:
        raise ConfigError(message + " (ladarun.run runs one setting: loop over it for several)")
    # ${hydra:...} interpolations in the config resolve against this, as under @hydra.main; the
    # caller's own Hydra state (a notebook's, a test's) is put back afterwards.
    hydra_state = HydraConfig.instance()
    previous = hydra_state.cfg
    hydra_state.set_config(cfg)
    try:
        try:
            out_dir = Path(str(cfg.hydra.run.dir))
        except OmegaConfBaseException as err:
            text = " ".join(str(err).split())
            raise ConfigError(f"hydra.run.dir does not resolve: {text}") from None
        with open_dict(cfg):
            del cfg["hydra"]  # the job's config, as @hydra.main hands it to the task
        fresh = not out_dir.exists() or only_hydra_files(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _log_to(out_dir / "ladarun.log"):
                run_from_config(cfg, out_dir, overrides=overrides)
        except ConfigError:
            if fresh and only_hydra_files(out_dir):
                # Refused before anything was run, as the CLI: leave no folder that a table
                # would list or a corrected call would have to get past.
                remove_fresh(out_dir, stop=Path.cwd())
            raise
        config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    finally:
        hydra_state.cfg = previous
    done = load_run(out_dir)
    if done.problem is not None or done.summary is None or done.metrics is None:
        raise DamagedFileError(f"{out_dir}: {done.problem or 'no summary.json after the run'}")
    return RunResult(dir=out_dir, summary=done.summary, metrics=done.metrics, config=config)


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its interpolations resolved where they can be (``${oc.env:...}`` may not)."""
    try:
        return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.create(config), resolve=True))
    except OmegaConfBaseException:
        return config


def _frame(run: Run, root: Path) -> pd.DataFrame:
    assert run.metrics is not None
    config = flatten({k: v for k, v in _resolved(run.config).items() if k != "hydra"})
    ident = {
        "run": str(run.path.relative_to(root)) if run.path != root else ".",
        "status": run.status,
        "row": run.row.key,
        "label": run.row.label,
    }
    columns = {**ident, **config}
    head = pd.DataFrame({k: [v] * len(run.metrics) for k, v in columns.items()})
    return pd.concat([head, run.metrics.reset_index(drop=True)], axis=1)


def load_runs(folder: Path | str = "outputs") -> pd.DataFrame:
    """Every run under ``folder`` as one tidy DataFrame: one row per run and iteration.

    Columns: ``run`` (the run's folder, relative to ``folder``), ``status`` (finished,
    incomplete or failed), ``row`` and ``label`` (its Table 1 row), its config flattened to
    dotted keys (``dataset.name``, ``protocol.iterations``, ``seed``...), then its metrics.csv
    columns (``iteration``, ``n_labeled``, ``test_acc``, ``best_acc``..., each method's own).
    Unfinished runs contribute the iterations they finished; runs that cannot be read are left
    out with a warning that says why.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; pass the folder that holds the runs")
    frames = []
    for found in _load_run_list(root):
        if found.problem is not None:
            warnings.warn(f"{found.path} left out: {found.problem}", stacklevel=2)
        elif found.metrics is not None and len(found.metrics):
            frames.append(_frame(found, root))
    if not frames:
        return pd.DataFrame(columns=["run", "status", "row", "label", "iteration"])
    return pd.concat(frames, ignore_index=True)
