"""The run directory as the loop sees it: one object reads back what a run needs to resume and
records each finished iteration (metrics.csv, queries.csv, checkpoint.pt, the trackers) and the
end (summary.json).

Order matters for exact resume: an iteration's rows are written before its checkpoint (a crash
between the two redoes the iteration on resume, and MetricsWriter and QueryLog drop its rows
first), and the trackers hear of it only after the checkpoint (trackers.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..progress import bars
from ..runtime import SpeedOptions, code_version
from .checkpoint import Checkpoint
from .files import CHECKPOINT, METRICS, QUERIES
from .metrics import MetricsWriter, read_rows
from .queries import QueryLog
from .state import RunState
from .summary import RunSummary, write_summary
from .trackers import Logger, ending_unfinished, finish_loggers, tracked_run

log = logging.getLogger("ladarun.loop")


@dataclass
class RunOptions:
    """How a run executes and what it keeps, not what it measures."""

    deterministic: bool = True  # cuDNN deterministic kernels
    progress: bool = True  # tqdm bar over iterations, and over long phases inside one
    checkpoint: bool = True  # save the state after every iteration; a later call resumes from it
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finishes
    # identifies the configuration; another one's checkpoint is refused
    fingerprint: Optional[str] = None
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    # stored in summary.json as is (the resolved config)
    run_info: dict[str, Any] = field(default_factory=dict)
    # trackers beside metrics.csv (the logger group: TensorBoard, MLflow), and where their
    # default stores go and the MLflow experiment: the sweep folder and its name for a sweep
    loggers: list[Logger] = field(default_factory=list)
    log_root: Optional[Path] = None  # None: the run folder
    experiment: str = "ladarun"


@dataclass
class Picks:
    """One acquisition's outcome, for queries.csv and metrics.csv."""

    indices: torch.Tensor  # the labeled points, best first
    scores: Optional[torch.Tensor]  # their ranked score, when the method has one
    partners: Optional[torch.Tensor]  # their pair partners (LADA's InfoMixup)
    metrics: dict[str, float]  # the acquisition's own metrics.csv columns


class RunDir:
    """Everything a run writes into its folder and reads back to resume."""

    def __init__(self, path: Path, options: RunOptions):
        self.path, self.options = Path(path), options
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Checkpoint(self.path / CHECKPOINT, options.fingerprint)
        self.started = time.perf_counter()

    def load_checkpoint(self, device: torch.device) -> Optional[dict[str, Any]]:
        """The state after the last finished iteration, when the run resumes; else None."""
        saved = self.checkpoint.load(device) if self.options.checkpoint else None
        if saved is not None:
            log.info(
                "Resuming %s from its checkpoint after iteration %d.", self.path, saved["iteration"]
            )
        return saved

    @contextlib.contextmanager
    def recording(
        self,
        state: RunState,
        columns: Sequence[str],
        labels: torch.Tensor,
        iterations: int,
        name: str,
    ) -> Iterator[Recorder]:
        """Open metrics.csv, queries.csv and the trackers for iterations ``state.next_iteration``
        to ``iterations`` (a resumed run keeps the rows its checkpoint covers)."""
        options = self.options
        resume_after = state.next_iteration - 1 if state.next_iteration > 0 else None
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(
                MetricsWriter(self.path / METRICS, columns, resume_after=resume_after)
            )
            queries = QueryLog(self.path / QUERIES, labels, state.labeled_at, resume_after)
            stack.enter_context(bars(options.progress))
            if options.progress:  # log lines printed above the bars, not through them
                stack.enter_context(logging_redirect_tqdm())
            done = read_rows(self.path / METRICS) if resume_after is not None else []
            stack.enter_context(ending_unfinished(options.loggers))
            config = options.run_info.get("config", {})
            tracked = tracked_run(
                self.path, options.log_root, options.experiment, config, code_version()
            )
            for logger in options.loggers:
                logger.start(tracked, done)
            recorder = Recorder(self, writer, queries, state, iterations, name)
            yield recorder
            recorder.close()

    def finish(
        self, state: RunState, iterations: int, aux_params: int, device: torch.device
    ) -> RunSummary:
        """summary.json, then the trackers' end; the checkpoint goes unless kept."""
        total_s = state.elapsed_before + time.perf_counter() - self.started
        summary = RunSummary(
            state.best,
            state.acc,
            state.n_labeled,
            iterations,
            total_s,
            str(device),
            self.path / METRICS,
        )
        write_summary(self.path, summary, state, aux_params, device, self.options.run_info)
        finish_loggers(
            self.options.loggers, "FINISHED"
        )  # after summary.json, an artifact of MLflow's
        if not self.options.keep_checkpoint:
            self.checkpoint.remove()
        return summary


class Recorder:
    """The open files of a running run: one :meth:`record` and one :meth:`save` per iteration."""

    def __init__(
        self,
        run_dir: RunDir,
        writer: MetricsWriter,
        queries: QueryLog,
        state: RunState,
        iterations: int,
        name: str,
    ):
        self.run_dir, self.writer, self.queries, self.state = run_dir, writer, queries, state
        self.total = iterations
        self.bar = tqdm(
            range(state.next_iteration, iterations + 1),
            desc=name,
            unit="it",
            disable=not run_dir.options.progress,
        )
        self.bar.reset(total=iterations + 1)  # the whole run, with the resumed part done
        self.bar.update(state.next_iteration)
        self.row: dict[str, Any] = {}

    def iterations(self) -> Iterator[int]:
        """The iterations left to run (0 = the initial training)."""
        yield from self.bar

    def record(
        self,
        iteration: int,
        picks: Optional[Picks],
        trained: Mapping[str, Optional[float]],
        laps: Mapping[str, float],
        iter_s: float,
    ) -> None:
        """Write the iteration's metrics.csv row and queries.csv rows."""
        if picks is not None:
            self.queries.add(iteration, picks.indices, picks.scores, picks.partners)
        times = {
            "acquire_s": laps.get("acquire_s", 0.0),
            "train_s": laps["train_s"],
            "eval_s": laps["eval_s"],
        }
        extra = picks.metrics if picks is not None else {}
        self.row = {**self.state.record(iteration), **trained, **times, "iter_s": iter_s, **extra}
        self.writer.write(self.row)
        self.queries.write()

    def save(self, snapshot: Callable[[int, float], dict[str, Any]]) -> None:
        """Checkpoint the iteration just recorded (``snapshot(iteration, seconds)``), then tell
        the trackers and the log."""
        row, options = self.row, self.run_dir.options
        if options.checkpoint:
            elapsed = time.perf_counter() - self.run_dir.started
            self.run_dir.checkpoint.save(snapshot(row["iteration"], elapsed))
        for logger in options.loggers:
            logger.log(row)
        log.info(
            "iteration %d/%d: %d labels, test accuracy %.2f%%, best %.2f%%, %.1f s",
            row["iteration"],
            self.total,
            row["n_labeled"],
            row["test_acc"],
            row["best_acc"],
            row["iter_s"],
        )
        self.bar.set_postfix(acc=f"{row['test_acc']:.2f}", best=f"{row['best_acc']:.2f}")

    def close(self) -> None:
        self.bar.close()
        self.queries.write()  # also when the checkpoint was of the last iteration: nothing ran
