"""Algorithm 1 of the LADA paper, for any acquisition x augmentation pair.

This module knows nothing of Hydra: ``run_active_learning`` takes built objects and can be
called from plain Python (the tests do). What a run writes and how it resumes is state.py's;
where it runs (device, seeds, speed switches) is runtime.py's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from .acquisition.base import Acquisition, AcquisitionContext
from .augment.base import Augment, NoAugment
from .data.base import ActiveDataset
from .errors import ConfigError
from .models.staged import StagedClassifier
from .protocol import Protocol
from .runtime import (
    SpeedOptions,
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
from .training import evaluate, train_epoch

log = logging.getLogger(__name__)

ModelFactory = Callable[..., StagedClassifier]  # (in_channels=, num_classes=, image_size=) -> model


@dataclass
class RunOptions:
    """How a run executes, not what it measures."""

    deterministic: bool = True  # cuDNN deterministic kernels
    progress: bool = True  # tqdm bar over iterations
    checkpoint: bool = True  # save the state after every iteration; a later call resumes from it
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finishes
    fingerprint: Optional[str] = (
        None  # identifies the configuration; another one's checkpoint is refused
    )
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    run_info: dict[str, Any] = field(
        default_factory=dict
    )  # stored in summary.json as is (the resolved config)


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
    """Run Algorithm 1 and write ``metrics.csv`` and ``summary.json`` into ``out_dir``.

    With ``options.checkpoint`` on, the state after every finished iteration is saved to
    ``out_dir/checkpoint.pt``; a later call on the same ``out_dir`` continues from it, and the
    result is the same as that of an uninterrupted run. The checkpoint is deleted once
    summary.json is written, unless ``options.keep_checkpoint``.
    """
    augment, options = augment or NoAugment(), options or RunOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Checkpoint(out_dir / CHECKPOINT, options.fingerprint)
    saved = checkpoint.load(device) if options.checkpoint else None
    start = time.perf_counter()
    keep_large_buffers()
    seed_everything(seed, options.deterministic)
    # Active-learning decisions (initial set, candidate subsets, tie-breaks) draw from their own
    # generator, so they do not depend on how many random numbers training consumed.
    gen = torch.Generator().manual_seed(seed)
    speed = options.speed
    data = data.to(device)
    data.x_train, data.x_test = (
        speed.prepare_images(data.x_train),
        speed.prepare_images(data.x_test),
    )
    labeled = initial_labeled(data.y_train, data.num_classes, protocol.initial_per_class, gen)
    check_budget(protocol, data.y_train.numel(), labeled.numel())
    # labeled_at[i] = the iteration at which point i was labeled (0 = initial set), -1 = pool.
    labeled_at = torch.full((data.y_train.numel(),), -1, dtype=torch.long, device=device)
    labeled_at[labeled] = 0

    def new_model() -> tuple[StagedClassifier, torch.optim.Optimizer]:
        model = model_factory(
            in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size
        )
        model = speed.prepare_model(model.to(device))
        return model, torch.optim.Adam(model.parameters(), lr=protocol.lr)

    model, optimizer = new_model()
    initial_state = (
        {k: v.clone() for k, v in model.state_dict().items()} if protocol.reinit else None
    )
    first_it, best, acc, elapsed_before, resumes = 0, -1.0, 0.0, 0.0, []
    if saved is not None:  # continue after the checkpoint's iteration, exactly as if never stopped
        for part, key in (
            (model, "model"),
            (optimizer, "optimizer"),
            (acquisition, "acquisition"),
            (augment, "augment"),
        ):
            part.load_state_dict(saved[key])
        labeled_at, initial_state = saved["labeled_at"].to(device), saved["initial_state"]
        best, acc, elapsed_before = saved["best_acc"], saved["test_acc"], saved["elapsed_s"]
        first_it = saved["iteration"] + 1
        resumes = saved["resumes"] + [first_it]
        set_rng_state(saved["rng"], gen)
        log.info("Resuming %s from its checkpoint after iteration %d.", out_dir, saved["iteration"])

    metrics_path = out_dir / METRICS
    columns = list(acquisition.metric_names) + list(augment.metric_names)
    with MetricsWriter(
        metrics_path, columns, resume_after=first_it - 1 if saved is not None else None
    ) as writer:
        bar = tqdm(
            range(first_it, protocol.iterations + 1),
            desc=data.name,
            unit="it",
            disable=not options.progress,
            dynamic_ncols=True,
            initial=first_it,
            total=protocol.iterations + 1,
        )
        for it in bar:
            t0 = time.perf_counter()
            extra: dict[str, float] = {}
            if it > 0:  # acquire: label the query chosen from a fresh candidate subset
                with speed.autocast_on(device):
                    acquire_step(model, data, labeled_at, it, acquisition, augment, protocol, gen)
                extra.update(acquisition.extra_metrics())
                if (
                    initial_state is not None
                ):  # protocol.reinit: train from the initial weights again
                    model.load_state_dict(initial_state)
                    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
            synchronize(device)
            t1 = time.perf_counter()
            with speed.autocast_on(
                device
            ):  # train on the labeled set (plus the augmentation's data)
                epochs = protocol.epochs if it > 0 else protocol.initial_epochs
                loss = train_iteration(
                    model, optimizer, data, labeled_at, augment, protocol, epochs
                )
            if (
                it > 0
            ):  # after training: an augmentation may report what happened while it trained (AdaMixup)
                extra.update(augment.metrics())
            synchronize(device)
            t2 = time.perf_counter()
            with speed.autocast_on(device):  # evaluate on the whole test set
                acc = evaluate(model, data.x_test, data.y_test, protocol.eval_batch_size)
            t3 = time.perf_counter()
            best = max(best, acc)
            writer.write(
                {
                    "iteration": it,
                    "n_labeled": int((labeled_at >= 0).sum()),
                    "test_acc": acc,
                    "best_acc": best,
                    "train_loss": loss,
                    "acquire_s": t1 - t0 if it > 0 else 0.0,
                    "train_s": t2 - t1,
                    "eval_s": t3 - t2,
                    "iter_s": t3 - t0,
                    **extra,
                }
            )
            if options.checkpoint:
                # After the CSV row: a crash between the two redoes this iteration on resume,
                # and MetricsWriter drops its row first.
                checkpoint.save(
                    {
                        "iteration": it,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "labeled_at": labeled_at,
                        "initial_state": initial_state,
                        "acquisition": acquisition.state_dict(),
                        "augment": augment.state_dict(),
                        "best_acc": best,
                        "test_acc": acc,
                        "elapsed_s": elapsed_before + time.perf_counter() - start,
                        "resumes": resumes,
                        "rng": rng_state(gen),
                    }
                )
            bar.set_postfix(acc=f"{acc:.2f}", best=f"{best:.2f}")
        bar.close()

    total_s = elapsed_before + time.perf_counter() - start
    summary = RunSummary(
        best,
        acc,
        int((labeled_at >= 0).sum()),
        protocol.iterations,
        total_s,
        str(device),
        metrics_path,
    )
    write_summary(
        out_dir,
        summary,
        resumes,
        acquisition.aux_parameters() + augment.aux_parameters(),
        device,
        options,
    )
    if not options.keep_checkpoint:
        checkpoint.remove()
    return summary


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
            "area": learning_curve_area(
                summary.metrics_path
            ),  # mean test accuracy over iterations 0..N (metrics.csv)
            "n_labeled": summary.n_labeled,
            "iterations": summary.iterations,
            "total_s": round(summary.total_s, 3),
            "resumed_at": resumes,
            "aux_params": aux_params,
            "device": device_name(device),
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
    for _ in range(epochs):
        total += train_epoch(model, optimizer, x, y, idx, protocol.batch_size, data.train_transform)
        seen += idx.numel()
        extra = augment.extra_step(model, optimizer)
        if extra is not None:
            total += extra[0]
            seen += extra[1]
    return total.item() / max(seen, 1)
