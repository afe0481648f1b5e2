"""Algorithm 1 of the LADA paper, for any acquisition x augmentation pair.

This module knows nothing of Hydra: ``run_active_learning`` takes built objects and can be
called from plain Python (the tests do). What a run writes and how it resumes is state.py's;
where it runs (device, seeds, speed switches) is runtime.py's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .acquisition.base import Acquisition, AcquisitionContext
from .augment.base import Augment, NoAugment
from .data.base import ActiveDataset
from .errors import ConfigError
from .models.staged import StagedClassifier
from .progress import bars, phase
from .protocol import Protocol
from .queries import QUERIES, QueryLog
from .runtime import (
    SpeedOptions,
    cpu_name,
    device_name,
    keep_large_buffers,
    library_versions,
    seed_everything,
    synchronize,
)
from .state import (
    CHECKPOINT,
    METRICS,
    SUMMARY,
    Checkpoint,
    MetricsWriter,
    learning_curve_area,
    rng_state,
    set_rng_state,
    write_json_atomic,
)
from .tracking import Logger, TrackedRun, read_rows
from .training import evaluate, train_epoch

log = logging.getLogger(__name__)

ModelFactory = Callable[..., StagedClassifier]  # (in_channels=, num_classes=, image_size=) -> model


@dataclass
class RunOptions:
    """How a run executes, not what it measures."""

    deterministic: bool = True  # cuDNN deterministic kernels
    progress: bool = True  # tqdm bar over iterations, and over long phases inside one
    checkpoint: bool = True  # save the state after every iteration; a later call resumes from it
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finishes
    fingerprint: Optional[str] = (
        None  # identifies the configuration; another one's checkpoint is refused
    )
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    # stored in summary.json as is (the resolved config)
    run_info: dict[str, Any] = field(default_factory=dict)
    # trackers beside metrics.csv (the logger group: TensorBoard, MLflow), and where their
    # default stores go and the MLflow experiment: the sweep folder and its name for a sweep
    loggers: list[Logger] = field(default_factory=list)
    log_root: Optional[Path] = None  # None: the run folder
    experiment: str = "ladarun"


@dataclass
class RunSummary:
    best_acc: float
    final_acc: float
    n_labeled: int
    iterations: int
    total_s: float
    device: str
    metrics_path: Path


def run_active_learning(
    *,
    data: ActiveDataset,
    model_factory: ModelFactory,
    acquisition: Acquisition,
    protocol: Protocol,
    out_dir: Path,
    seed: int,
    device: torch.device,
    augment: Optional[Augment] = None,
    options: Optional[RunOptions] = None,
) -> RunSummary:
    """Run Algorithm 1 and write ``metrics.csv``, ``queries.csv`` and ``summary.json`` into
    ``out_dir`` (and to ``options.loggers``).

    With ``options.checkpoint`` on, the state after every finished iteration is saved to
    ``out_dir/checkpoint.pt``; a later call on the same ``out_dir`` continues from it, and the
    result is the same as that of an uninterrupted run. The checkpoint is deleted once
    summary.json is written, unless ``options.keep_checkpoint``.
    """
    augment, options = augment or NoAugment(), options or RunOptions()
    augment.check_protocol(protocol)  # before anything is written or trained
    out_dir, speed = Path(out_dir), options.speed
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(out_dir / CHECKPOINT, options.fingerprint)
    saved = checkpoint.load(device) if options.checkpoint else None
    start = time.perf_counter()
    keep_large_buffers()
    seed_everything(seed, options.deterministic)
    # Active-learning decisions (initial set, candidate subsets, tie-breaks) draw from their own
    # generator, so they do not depend on how many random numbers training consumed.
    gen = torch.Generator().manual_seed(seed)
    data = data.to(device)
    data.x_train = speed.prepare_images(data.x_train)
    data.x_test = speed.prepare_images(data.x_test)
    run = Progress(labeled_at=initial_labeled_at(data, protocol, gen))
    model = model_factory(
        in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size
    )
    model = speed.prepare_model(model.to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
    if protocol.reinit:
        run.initial_state = {k: v.clone() for k, v in model.state_dict().items()}

    def parts() -> dict[str, Any]:  # what saves its own state into the checkpoint
        return dict(model=model, optimizer=optimizer, acquisition=acquisition, augment=augment)

    if saved is not None:  # continue after the checkpoint's iteration, exactly as if never stopped
        run.restore(saved, device, gen, **parts())
        log.info("Resuming %s from its checkpoint after iteration %d.", out_dir, saved["iteration"])

    metrics_path = out_dir / METRICS
    columns = list(acquisition.metric_names) + list(augment.metric_names)
    resume_after = run.next_iteration - 1 if saved is not None else None
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(
            MetricsWriter(metrics_path, columns, resume_after=resume_after)
        )
        queries = QueryLog(out_dir / QUERIES, data.y_train, run.labeled_at, resume_after)
        stack.enter_context(bars(options.progress))
        if options.progress:  # log lines printed above the bars, not through them
            stack.enter_context(logging_redirect_tqdm())
        done = read_rows(metrics_path) if resume_after is not None else []
        stack.enter_context(ending_unfinished(options.loggers))
        tracked = tracked_run(out_dir, options)
        for logger in options.loggers:
            logger.start(tracked, done)
        iterations = range(run.next_iteration, protocol.iterations + 1)
        bar = tqdm(iterations, desc=data.name, unit="it", disable=not options.progress)
        bar.reset(total=protocol.iterations + 1)  # the whole run, with the resumed part done
        bar.update(run.next_iteration)
        for it in bar:
            t0 = time.perf_counter()
            extra: dict[str, float] = {}
            if it > 0:  # acquire: label the query chosen from a fresh candidate subset
                with speed.autocast_on(device):
                    chosen = acquire_step(
                        model, data, run.labeled_at, it, acquisition, augment, protocol, gen
                    )
                queries.add(it, chosen, *query_details(acquisition, augment, chosen))
                extra.update(acquisition.extra_metrics())
                if run.initial_state is not None:  # protocol.reinit: train from the initial weights
                    model.load_state_dict(run.initial_state)
                    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
            synchronize(device)
            t1 = time.perf_counter()
            epochs = protocol.epochs if it > 0 else protocol.initial_epochs
            # train on the labeled set (and the augmentation's data)
            with speed.autocast_on(device):
                loss = train_iteration(
                    model, optimizer, data, run.labeled_at, augment, protocol, epochs
                )
            if it > 0:  # after training: an augmentation may report on its training (AdaMixup)
                extra.update(augment.metrics())
            synchronize(device)
            t2 = time.perf_counter()
            with speed.autocast_on(device):  # evaluate on the whole test set
                run.acc = evaluate(model, data.x_test, data.y_test, protocol.eval_batch_size)
            t3 = time.perf_counter()
            run.best = max(run.best, run.acc)
            times = {"acquire_s": t1 - t0 if it > 0 else 0.0, "train_s": t2 - t1, "eval_s": t3 - t2}
            row = {**run.record(it), "train_loss": loss, **times, "iter_s": t3 - t0, **extra}
            writer.write(row)
            queries.write()
            if options.checkpoint:
                # After the CSV rows: a crash between the two redoes this iteration on resume,
                # and MetricsWriter and QueryLog drop its rows first.
                checkpoint.save(run.snapshot(it, time.perf_counter() - start, gen, **parts()))
            for logger in options.loggers:  # after the checkpoint: see tracking.py
                logger.log(row)
            log.info(
                "iteration %d/%d: %d labels, test accuracy %.2f%%, best %.2f%%, %.1f s",
                it,
                protocol.iterations,
                row["n_labeled"],
                run.acc,
                run.best,
                t3 - t0,
            )
            bar.set_postfix(acc=f"{run.acc:.2f}", best=f"{run.best:.2f}")
        bar.close()
        queries.write()  # also when the checkpoint was of the last iteration: nothing ran

    total_s = run.elapsed_before + time.perf_counter() - start
    n_labeled = int((run.labeled_at >= 0).sum())
    summary = RunSummary(
        run.best, run.acc, n_labeled, protocol.iterations, total_s, str(device), metrics_path
    )
    aux_params = acquisition.aux_parameters() + augment.aux_parameters()
    write_summary(out_dir, summary, run.resumes, aux_params, device, options)
    finish_loggers(options.loggers, "FINISHED")  # after summary.json, an artifact of MLflow's
    if not options.keep_checkpoint:
        checkpoint.remove()
    return summary


@dataclass
class Progress:
    """Where a run stands, besides the state of its networks and acquisition: what a
    checkpoint carries from one process to the next."""

    # labeled_at[i] = the iteration at which point i was labeled (0 = initial set), -1 = pool.
    labeled_at: torch.Tensor
    initial_state: Optional[dict[str, torch.Tensor]] = None  # protocol.reinit's starting weights
    next_iteration: int = 0
    best: float = -1.0
    acc: float = 0.0
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run
    resumes: list[int] = field(default_factory=list)  # iterations at which it resumed

    def record(self, iteration: int) -> dict[str, Any]:
        n_labeled = int((self.labeled_at >= 0).sum())
        return {
            "iteration": iteration,
            "n_labeled": n_labeled,
            "test_acc": self.acc,
            "best_acc": self.best,
        }

    def snapshot(
        self, iteration: int, elapsed: float, gen: torch.Generator, **parts: Any
    ) -> dict[str, Any]:
        return {
            "iteration": iteration,
            **{name: part.state_dict() for name, part in parts.items()},
            "labeled_at": self.labeled_at,
            "initial_state": self.initial_state,
            "best_acc": self.best,
            "test_acc": self.acc,
            "elapsed_s": self.elapsed_before + elapsed,
            "resumes": self.resumes,
            "rng": rng_state(gen),
        }

    def restore(
        self, saved: dict[str, Any], device: torch.device, gen: torch.Generator, **parts: Any
    ) -> None:
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        self.labeled_at, self.initial_state = saved["labeled_at"].to(device), saved["initial_state"]
        self.best, self.acc, self.elapsed_before = (
            saved["best_acc"],
            saved["test_acc"],
            saved["elapsed_s"],
        )
        self.next_iteration = saved["iteration"] + 1
        self.resumes = saved["resumes"] + [self.next_iteration]
        set_rng_state(saved["rng"], gen)


def write_summary(
    out_dir: Path,
    summary: RunSummary,
    resumes: list[int],
    aux_params: int,
    device: torch.device,
    options: RunOptions,
) -> None:
    """summary.json, written last: its presence marks the run finished."""
    write_json_atomic(
        out_dir / SUMMARY,
        {
            "best_acc": summary.best_acc,
            "final_acc": summary.final_acc,
            # mean test accuracy over iterations 0..N (metrics.csv)
            "area": learning_curve_area(summary.metrics_path),
            "n_labeled": summary.n_labeled,
            "iterations": summary.iterations,
            "total_s": round(summary.total_s, 3),
            "resumed_at": resumes,
            "aux_params": aux_params,
            "device": device_name(device),
            "cpu": cpu_name(),
            "versions": library_versions(),
            "run": options.run_info,
        },
    )


def initial_labeled(
    y: torch.Tensor, num_classes: int, per_class: int, generator: torch.Generator
) -> torch.Tensor:
    """``per_class`` random indices of every class (the paper's 2 per class, 20 in all)."""
    y_cpu = y.cpu()
    picks = []
    for c in range(num_classes):
        members = torch.nonzero(y_cpu == c).flatten()
        if members.numel() < per_class:
            raise ConfigError(
                f"class {c} has {members.numel()} training examples, fewer than "
                f"protocol.initial_per_class={per_class}; lower protocol.initial_per_class"
            )
        picks.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(picks).to(y.device)


def check_budget(protocol: Protocol, n_train: int, n_initial: int) -> None:
    pool = n_train - n_initial
    if protocol.query > pool:
        raise ConfigError(
            f"protocol.query={protocol.query} is larger than the unlabeled pool ({pool} points); lower protocol.query"
        )
    needed = protocol.iterations * protocol.query
    if needed > pool:
        raise ConfigError(
            f"{protocol.iterations} iterations x query {protocol.query} = {needed} points, but the pool holds "
            f"only {pool}; set protocol.iterations <= {pool // protocol.query}"
        )


def initial_labeled_at(
    data: ActiveDataset, protocol: Protocol, gen: torch.Generator
) -> torch.Tensor:
    """The labeled-at array of the initial set: 0 for its points, -1 for the pool."""
    labeled = initial_labeled(data.y_train, data.num_classes, protocol.initial_per_class, gen)
    check_budget(protocol, data.y_train.numel(), labeled.numel())
    labeled_at = torch.full(
        (data.y_train.numel(),), -1, dtype=torch.long, device=data.y_train.device
    )
    labeled_at[labeled] = 0
    return labeled_at


def acquire_step(
    model: StagedClassifier,
    data: ActiveDataset,
    labeled_at: torch.Tensor,
    iteration: int,
    acquisition: Acquisition,
    augment: Augment,
    protocol: Protocol,
    generator: torch.Generator,
) -> torch.Tensor:
    """Algorithm 1's acquisition: draw a fresh candidate subset of the pool, let the
    augmentation (by default: the acquisition) choose the query, label it in ``labeled_at``
    (in place) and tell the augmentation. Returns the chosen dataset indices."""
    # queries.csv's details are set by this choice alone, never left over from the last one
    acquisition.query_scores = augment.query_scores = augment.query_partners = None
    pool = torch.nonzero(labeled_at < 0).flatten()
    n_cand = (
        pool.numel() if protocol.pool_subset is None else min(protocol.pool_subset, pool.numel())
    )
    candidates = pool[torch.randperm(pool.numel(), generator=generator)[:n_cand].to(pool.device)]
    ctx = AcquisitionContext(
        model, data, torch.nonzero(labeled_at >= 0).flatten(), generator, protocol.score_batch_size
    )
    chosen = augment.choose_query(acquisition, ctx, candidates, protocol.query)
    if chosen.numel() != protocol.query or torch.unique(chosen).numel() != chosen.numel():
        raise RuntimeError(
            f"acquisition returned {chosen.numel()} indices, expected {protocol.query} distinct"
        )
    if bool((labeled_at[chosen] >= 0).any()):
        raise RuntimeError("acquisition selected an already labeled point")
    labeled_at[chosen] = iteration
    augment.begin_iteration(ctx, chosen)
    return chosen


def query_details(
    acquisition: Acquisition, augment: Augment, chosen: torch.Tensor
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The scores and pair partners of the points just chosen, for queries.csv: the
    augmentation's when it ranked by its own score, else the acquisition's (None: none)."""
    scores = augment.query_scores if augment.query_scores is not None else acquisition.query_scores
    partners = augment.query_partners
    aligned = lambda t: t is not None and t.numel() == chosen.numel()
    return (scores if aligned(scores) else None), (partners if aligned(partners) else None)


def tracked_run(out_dir: Path, options: RunOptions) -> TrackedRun:
    """The run as its trackers see it, named by its folder under the sweep folder (one run: by
    its folder as given, e.g. outputs/digits/ent-none/seed0)."""
    root = Path(options.log_root) if options.log_root is not None else out_dir
    try:
        name = out_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        name = "."
    if name == ".":
        name = out_dir.as_posix()
    config = options.run_info.get("config", {})
    return TrackedRun(out_dir, root, options.experiment, name, config)


@contextlib.contextmanager
def ending_unfinished(loggers: list[Logger]) -> Iterator[None]:
    """Tell the loggers when the block ends on an error (FAILED) or Ctrl-C (KILLED)."""
    try:
        yield
    except KeyboardInterrupt:
        finish_loggers(loggers, "KILLED")
        raise
    except BaseException:
        finish_loggers(loggers, "FAILED")
        raise


def finish_loggers(loggers: list[Logger], status: str) -> None:
    """Tell every logger the run ended. A tracker failing here does not fail the run, whose
    files are whole by now: it is logged as a warning instead."""
    for logger in loggers:
        try:
            logger.finish(status)
        except Exception as err:  # a tracking server's error: any kind
            log.warning(
                "%s could not record the run's end (%s): %s", type(logger).__name__, status, err
            )


def train_iteration(
    model: StagedClassifier,
    optimizer: torch.optim.Optimizer,
    data: ActiveDataset,
    labeled_at: torch.Tensor,
    augment: Augment,
    protocol: Protocol,
    epochs: int,
) -> float:
    """``epochs`` passes over the labeled set (plus the augmentation's extra data), each
    followed by the augmentation's extra step; returns the mean loss per instance."""
    idx = torch.nonzero(labeled_at >= 0).flatten()
    x, y = data.x_train, data.y_train
    extra_data = augment.extra_training_data()
    if extra_data is not None:  # built once per iteration, not per epoch
        x, y = torch.cat([x[idx], extra_data[0]]), torch.cat([y[idx], extra_data[1]])
        idx = torch.arange(y.numel(), device=y.device)
    total = torch.zeros((), device=x.device)
    seen = 0
    for _ in phase(range(epochs), "training epochs"):
        total += train_epoch(model, optimizer, x, y, idx, protocol.batch_size, data.train_transform)
        seen += idx.numel()
        extra = augment.extra_step(model, optimizer)
        if extra is not None:
            total += extra[0]
            seen += extra[1]
    return total.item() / max(seen, 1)
