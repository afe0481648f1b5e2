"""Experiment trackers beside metrics.csv: the ``logger`` config group's TensorBoard, MLflow and
Weights & Biases.

A logger receives every metrics.csv row as its iteration ends, with the number of labels as the
step (``log``), and the run's end (``finish``). No point is ever logged twice, however often a
run is killed and resumed: the loop logs a row only after the checkpoint that covers it is
saved, and hands ``start`` the rows the checkpoint covers, which the logger makes sure it holds
(TensorBoard: hides every earlier event with ``purge_step`` and writes them again; MLflow:
reuses the MLflow run recorded in the run folder and adds the points it lacks; W&B: the same,
with the points it logged recorded in the run folder, since an offline run cannot be asked).

``csv`` (metrics.csv, queries.csv) is no logger here: every run writes those files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence
from urllib.parse import unquote, urlparse

from ..errors import ConfigError
from .files import METRICS, QUERIES, SUMMARY, open_run_file, write_json_atomic
from .identity import flatten
from .metrics import read_rows

log = logging.getLogger(__name__)

# metrics.csv columns that are the step or its index, not metrics
NOT_METRICS = ("iteration", "n_labeled")
MLFLOW_RUN = "mlflow_run.json"  # the MLflow run of this run folder, reused on resume
MLFLOW_DB = "mlflow.db"
# hidden: ladarun-table skips hidden folders, and would take its copies of summary.json for runs
MLFLOW_ARTIFACTS = ".mlartifacts"
CURVE = "learning_curve.png"
WANDB_RUN = "wandb_run.json"  # the W&B run of this run folder and the steps logged to it
WANDB_DIR = ".wandb"  # hidden, as .mlartifacts: it holds copies of summary.json


def _missing(package: str, extra: str) -> ConfigError:
    return ConfigError(
        f"logger={extra} needs the {package} package; install it with pip install -e '.[{extra}]' "
        f"(or drop {extra} from logger=...)"
    )


@dataclass
class TrackedRun:
    """What a tracker is told about the run it follows."""

    out_dir: Path  # the run folder
    root: Path  # where default stores go: the sweep folder (ladarun -m), else the run folder
    experiment: str  # the sweep folder's name, else "ladarun"
    name: str  # the run's name in a tracker: its folder relative to ``root``
    config: dict[str, Any]  # the resolved config
    code: dict[str, Any] = field(default_factory=dict)  # the code's git commit and dirty flag


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a metrics.csv row (as written, or as read back) as floats; empty cells
    (a method's column in an iteration without it) are left out."""
    out = {}
    for key, value in row.items():
        if key in NOT_METRICS or value is None or value == "":
            continue
        out[key] = float(value)
    return out


class Logger:
    """One tracker. ``start`` before the first new row, ``log`` after each iteration's
    checkpoint, ``finish`` at the end (also after an error)."""

    def start(self, run: TrackedRun, done: Sequence[Mapping[str, Any]]) -> None:
        """Open the tracker; ``done`` are the metrics.csv rows already covered by the
        checkpoint (empty for a fresh run), which the tracker must hold exactly once."""

    def log(self, row: Mapping[str, Any]) -> None:
        """One iteration's metrics.csv row; its step is ``row["n_labeled"]``."""

    def finish(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED (interrupted: a rerun resumes it)."""


class TensorBoardLogger(Logger):
    """Event files in ``<run>/<subdir>``: one scalar per metrics.csv column, step = labels."""

    def __init__(self, subdir: str = "tensorboard"):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            raise _missing("tensorboard", "tensorboard") from None
        self._writer_class = SummaryWriter
        self.subdir = subdir
        self._writer: Any = None

    def start(self, run: TrackedRun, done: Sequence[Mapping[str, Any]]) -> None:
        # purge_step=0: readers (TensorBoard, EventAccumulator) drop every event written before
        # this one, so the points of a killed process (some maybe unflushed, some maybe ahead of
        # the checkpoint) are replaced by the checkpoint's rows, written again here.
        self._writer = self._writer_class(log_dir=str(run.out_dir / self.subdir), purge_step=0)
        for row in done:
            self._add(row)
        self._writer.flush()

    def _add(self, row: Mapping[str, Any]) -> None:
        step = int(row["n_labeled"])
        for key, value in scalars(row).items():
            self._writer.add_scalar(key, value, global_step=step)

    def log(self, row: Mapping[str, Any]) -> None:
        self._add(row)
        self._writer.flush()  # a Slurm job killed at its time limit keeps every iteration

    def finish(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()


@contextlib.contextmanager
def _file_lock(path: Optional[Path]) -> Iterator[None]:
    """Serialise the creation of a shared SQLite store: parallel jobs of a sweep would otherwise
    race to create its tables and the experiment."""
    if path is None:
        yield
        return
    with open_run_file(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MLflowLogger(Logger):
    """One MLflow run per ladarun run, in one MLflow experiment per sweep."""

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None):
        try:
            import mlflow  # noqa: F401

            if tracking_uri is None:  # the default SQLite store needs these two
                import alembic  # noqa: F401
                import sqlalchemy  # noqa: F401
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self._client: Any = None
        self._run_id = ""
        self._out_dir = Path()
        self._artifacts: Optional[Path] = None

    def start(self, run: TrackedRun, done: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.tracking import MlflowClient

        self._out_dir = run.out_dir
        default_store = self.tracking_uri is None
        # Where this store's artifacts belong; None for a store the user configured.
        self._artifacts = (run.root / MLFLOW_ARTIFACTS).resolve() if default_store else None
        uri = self.tracking_uri or f"sqlite:///{(run.root / MLFLOW_DB).resolve()}"
        name = self.experiment or run.experiment
        with _file_lock(run.root / f"{MLFLOW_DB}.lock" if default_store else None), _quiet():
            self._client = client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                artifacts = (
                    (run.root / MLFLOW_ARTIFACTS).resolve().as_uri() if default_store else None
                )
                experiment_id = client.create_experiment(name, artifact_location=artifacts)
        self._run_id = self._previous_run(uri) if done else ""
        if self._run_id:
            client.update_run(self._run_id, status="RUNNING")
            log.info("MLflow: resuming run %s in %s", self._run_id, uri)
        else:
            self._run_id = client.create_run(experiment_id, run_name=run.name).info.run_id
            write_json_atomic(
                run.out_dir / MLFLOW_RUN,
                {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": self._run_id},
            )
            log.info("MLflow: run %s (experiment %r) in %s", self._run_id, name, uri)
        self._log_params({**run.config, "code": run.code})
        self._backfill(done)

    def _previous_run(self, uri: str) -> str:
        """The MLflow run an earlier process of this run folder logged to, if it is still there."""
        path = self._out_dir / MLFLOW_RUN
        if not path.exists():
            return ""
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return ""
        if saved.get("tracking_uri") != uri:
            return ""
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_run(saved["run_id"])
        except (MlflowException, KeyError):
            return ""
        return "" if found.info.lifecycle_stage == "deleted" else str(saved["run_id"])

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # MLflow refuses to change a logged param: a resumed run logs only the ones it lacks.
        have = self._client.get_run(self._run_id).data.params
        params = [
            Param(k, str(v)) for k, v in sorted(flatten(dict(config)).items()) if k not in have
        ]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params per call
            self._client.log_batch(self._run_id, params=params[i : i + 100])

    def _backfill(self, done: Sequence[Mapping[str, Any]]) -> None:
        """Log the checkpoint's rows that this MLflow run lacks (killed before logging them, or
        a new MLflow run for a resumed ladarun run)."""
        from mlflow.entities import Metric

        have: dict[str, set[int]] = {}
        missing = []
        for row in done:
            step = int(row["n_labeled"])
            for key, value in scalars(row).items():
                if key not in have:
                    history = self._client.get_metric_history(self._run_id, key)
                    have[key] = {m.step for m in history}
                if step not in have[key]:
                    missing.append(Metric(key, value, int(time.time() * 1000), step))
        for i in range(0, len(missing), 1000):
            self._client.log_batch(self._run_id, metrics=missing[i : i + 1000])

    def log(self, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["n_labeled"])
        metrics = [Metric(k, v, now, step) for k, v in scalars(row).items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def finish(self, status: str) -> None:
        if self._client is None or not self._run_id:
            return
        if status == "FINISHED" and self._artifacts_in_place():
            for name in (SUMMARY, METRICS, QUERIES):
                if (self._out_dir / name).exists():
                    self._client.log_artifact(self._run_id, str(self._out_dir / name))
            self._client.log_figure(self._run_id, learning_curve(self._out_dir), CURVE)
        self._client.set_terminated(self._run_id, status=status)

    def _artifacts_in_place(self) -> bool:
        """Whether this MLflow run's artifact folder lies in the sweep folder's store: after the
        runs were moved, the store still names the old place, which is never written to (the
        files stay in the run folder, and a warning says so)."""
        if self._artifacts is None:
            return True
        uri = self._client.get_run(self._run_id).info.artifact_uri or ""
        where = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else None
        if where is not None and (where == self._artifacts or self._artifacts in where.parents):
            return True
        log.warning(
            "MLflow: the run's artifact folder %s is not in %s (the runs were moved?); its "
            "artifacts are not logged there: summary.json, metrics.csv and queries.csv stay in %s",
            uri,
            self._artifacts,
            self._out_dir,
        )
        return False


class WandbLogger(Logger):
    """One W&B run per ladarun run, in one W&B project per sweep (the sweep folder's name), with
    the MLflow logger's content: the resolved config and code version as the run's config, every
    metrics.csv column per iteration with the number of labels as the step, and at the end
    summary.json's numbers as its summary and summary.json, metrics.csv, queries.csv and a
    learning curve as its files. ``mode``: online, offline (no account needed; ``wandb sync``
    uploads later) or disabled; null leaves it to WANDB_MODE."""

    def __init__(
        self,
        project: Optional[str] = None,
        entity: Optional[str] = None,
        mode: Optional[str] = None,
    ):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise _missing("wandb", "wandb") from None
        self.project, self.entity, self.mode = project, entity, mode
        self._run: Any = None
        self._out_dir = Path()
        self._logged: list[int] = []

    def start(self, run: TrackedRun, done: Sequence[Mapping[str, Any]]) -> None:
        import wandb

        self._out_dir = run.out_dir
        project = self.project or run.experiment
        saved = _read_json(run.out_dir / WANDB_RUN) if done else {}
        resumes = saved.get("project") == project and bool(saved.get("id"))
        run_id = str(saved["id"]) if resumes else uuid.uuid4().hex[:8]
        self._logged = [int(s) for s in saved.get("logged", [])] if resumes else []
        store = run.root / WANDB_DIR
        store.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True)
        self._run = wandb.init(
            project=project,
            entity=self.entity,
            dir=str(store),
            id=run_id,
            name=run.name,
            group=run.experiment,
            config={**run.config, "code": run.code},
            resume="allow",
            mode=self.mode,  # type: ignore[arg-type]  # None: WANDB_MODE
            reinit="finish_previous",
            settings=settings,
        )
        self._save_ledger(project)
        log.info(
            "W&B: %s run %s (project %r) in %s",
            "resuming" if resumes else "new",
            run_id,
            project,
            store,
        )
        for row in done:  # the checkpoint's rows that no earlier process logged
            if int(row["n_labeled"]) not in self._logged:
                self.log(row)

    def _save_ledger(self, project: str) -> None:
        write_json_atomic(
            self._out_dir / WANDB_RUN,
            {"project": project, "id": self._run.id, "logged": self._logged},
        )

    def log(self, row: Mapping[str, Any]) -> None:
        step = int(row["n_labeled"])
        # W&B drops a step below its last one: a row logged again after a kill cannot repeat
        self._run.log(scalars(row), step=step)
        self._logged.append(step)
        self._save_ledger(self._run.project)

    def finish(self, status: str) -> None:
        if self._run is None:
            return
        if status == "FINISHED":
            summary = _read_json(self._out_dir / SUMMARY)
            for key in (
                "best_acc",
                "final_acc",
                "area",
                "best_val_test_acc",
                "n_labeled",
                "total_s",
            ):
                if summary.get(key) is not None:
                    self._run.summary[key] = summary[key]
            for name in (SUMMARY, METRICS, QUERIES):  # the run's files, uploaded with it
                if (self._out_dir / name).exists():
                    shutil.copy2(self._out_dir / name, Path(self._run.dir) / name)
            learning_curve(self._out_dir).savefig(Path(self._run.dir) / CURVE)
        self._run.summary["ladarun_status"] = status
        self._run.finish(exit_code=0 if status == "FINISHED" else 1)
        self._run = None


def _read_json(path: Path) -> dict[str, Any]:
    """A small JSON file of ours, or {} when it is missing or unreadable (then nothing resumes)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def learning_curve(out_dir: Path) -> Any:
    """A matplotlib figure of the run's test and best accuracy against the number of labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(out_dir / METRICS)
    labels = [int(r["n_labeled"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(labels, [float(r["test_acc"]) for r in rows], marker=".", label="test accuracy")
    ax.plot(labels, [float(r["best_acc"]) for r in rows], linestyle="--", label="best so far")
    ax.set_xlabel("labeled points")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(out_dir.name if out_dir.name else str(out_dir))
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # log_figure saves it; nothing is shown
    return fig


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Creating a SQLite store logs alembic's migrations at INFO and SQLAlchemy's deprecation
    warnings; a run's log should not carry them."""
    loggers = [logging.getLogger(n) for n in ("alembic", "mlflow.store.db.utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def tracked_run(
    out_dir: Path,
    log_root: Optional[Path],
    experiment: str,
    config: dict[str, Any],
    code: dict[str, Any],
) -> TrackedRun:
    """The run as its trackers see it, named by its folder under the sweep folder (one run: by
    its folder as given, e.g. outputs/digits/ent-none/seed0)."""
    root = Path(log_root) if log_root is not None else out_dir
    try:
        name = out_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        name = "."
    if name == ".":
        name = out_dir.as_posix()
    return TrackedRun(out_dir, root, experiment, name, config, code)


@contextlib.contextmanager
def ending_unfinished(loggers: Sequence[Logger]) -> Iterator[None]:
    """Tell the loggers when the block ends on an error (FAILED) or Ctrl-C (KILLED)."""
    try:
        yield
    except KeyboardInterrupt:
        finish_loggers(loggers, "KILLED")
        raise
    except BaseException:
        finish_loggers(loggers, "FAILED")
        raise


def finish_loggers(loggers: Sequence[Logger], status: str) -> None:
    """Tell every logger the run ended. A tracker failing here does not fail the run, whose
    files are whole by now: it is logged as a warning instead."""
    for logger in loggers:
        try:
            logger.finish(status)
        except Exception as err:  # a tracking server's error: any kind
            log.warning(
                "%s could not record the run's end (%s): %s", type(logger).__name__, status, err
            )
