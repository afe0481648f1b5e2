"""Algorithm 1 of the LADA paper, for any acquisition x augmentation pair.

This module knows nothing of Hydra: ``run_active_learning`` takes built objects and can be
called from plain Python (the tests do). What a run writes and how it resumes is rundir's;
where it runs (device, seeds, speed switches) is runtime.py's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .acquisition.base import Acquisition, AcquisitionContext
from .augment.base import Augment, NoAugment
from .data.base import ActiveDataset
from .errors import ConfigError, TrainingDivergedError
from .models.staged import StagedClassifier
from .progress import phase
from .protocol import Protocol
from .rundir.run import Picks, RunDir, RunOptions
from .rundir.state import RunState
from .rundir.summary import RunSummary
from .runtime import Stopwatch, cpu_name, keep_large_buffers, seed_everything
from .training import (
    OptimizerFactory,
    SchedulerFactory,
    evaluate,
    make_optimizer,
    make_scheduler,
    train_epoch,
)

__all__ = ["Experiment", "RunOptions", "RunSummary", "run_active_learning"]

ModelFactory = Callable[..., StagedClassifier]  # (in_channels=, num_classes=, image_size=) -> model

# labeled_at's values besides a labeling iteration (>= 0)
POOL = -1  # unlabeled: the candidates of every acquisition
VALIDATION = -2  # labeled for validation (protocol.val_size): never trained on, never acquired
# The validation draw's generator is seeded apart from the run's (seed + this), so that holding
# out a validation set leaves the initial labeled set as it is without one.
VALIDATION_SEED_OFFSET = 7919


@dataclass
class Experiment:
    """What a run measures: the data, the classifier, the acquisition and augmentation, the
    protocol's budgets and schedule, the seed, and the classifier's optimizer and learning-rate
    schedule (None: Adam at ``protocol.lr``, a constant rate, as the paper)."""

    data: ActiveDataset
    model_factory: ModelFactory
    acquisition: Acquisition
    protocol: Protocol
    seed: int
    augment: Augment = field(default_factory=NoAugment)
    optimizer: Optional[OptimizerFactory] = None
    scheduler: Optional[SchedulerFactory] = None

    def __post_init__(self) -> None:
        if self.augment is None:  # the plain Algorithm 1: the acquisition chooses alone
            self.augment = NoAugment()


def run_active_learning(
    experiment: Experiment,
    out_dir: Path,
    device: torch.device,
    options: Optional[RunOptions] = None,
) -> RunSummary:
    """Run Algorithm 1 and write ``metrics.csv``, ``queries.csv`` and ``summary.json`` into
    ``out_dir`` (and to ``options.loggers``).

    With ``options.checkpoint`` on, the state after every finished iteration is saved to
    ``out_dir/checkpoint.pt``; a later call on the same ``out_dir`` continues from it, and the
    result is the same as that of an uninterrupted run. The checkpoint is deleted once
    summary.json is written, unless ``options.keep_checkpoint``.
    """
    options = options or RunOptions()
    protocol = experiment.protocol
    experiment.augment.check_protocol(protocol)  # before anything is written or trained
    run_dir = RunDir(out_dir, options)
    saved = run_dir.load_checkpoint(device)
    keep_large_buffers()
    learner = Learner(experiment, device, options)
    if saved is not None:  # continue after the checkpoint's iteration, exactly as if never stopped
        learner.restore(saved)
    clock = Stopwatch(device)
    data = learner.data
    with run_dir.recording(
        learner.state, learner.metric_names, data.y_train, protocol.iterations, data.name
    ) as rec:
        for it in rec.iterations():
            clock.start()
            picks = None
            if it > 0:  # acquire: label the query chosen from a fresh candidate subset
                with clock.lap("acquire_s"):
                    picks = learner.acquire(it)
            with clock.lap("train_s"):  # train on the labeled set (and the augmentation's data)
                trained = learner.train(it)
            with clock.lap("eval_s"):  # evaluate on the whole test set
                learner.evaluate()
            rec.record(it, picks, trained, clock.laps, clock.iteration())
            rec.save(learner.snapshot)
    aux_params = experiment.acquisition.aux_parameters() + experiment.augment.aux_parameters()
    return run_dir.finish(learner.state, protocol.iterations, aux_params, device)


class Learner:
    """The classifier, its optimizer and the labeled set of one run, with Algorithm 1's steps:
    acquire, train and evaluate."""

    def __init__(self, experiment: Experiment, device: torch.device, options: RunOptions):
        self.experiment, self.device, self.speed = experiment, device, options.speed
        protocol = experiment.protocol
        seed_everything(experiment.seed, options.deterministic)
        # Active-learning decisions (initial set, candidate subsets, tie-breaks) draw from their
        # own generator, so they do not depend on how many random numbers training consumed.
        self.gen = torch.Generator().manual_seed(experiment.seed)
        data = self.data = experiment.data.to(device)
        fingerprint = data.fingerprint()  # before the speed switches change the layout
        data.x_train = self.speed.prepare_images(data.x_train)
        data.x_test = self.speed.prepare_images(data.x_test)
        labeled_at = initial_labeled_at(data, protocol, self.gen)
        hold_out_validation(labeled_at, protocol.val_size, experiment.seed)
        self.state = RunState(
            labeled_at=labeled_at,
            data_fingerprint=fingerprint,
            threads=torch.get_num_threads(),
            cpu=cpu_name(),
        )
        model = experiment.model_factory(
            in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size
        )
        self.model = self.speed.prepare_model(model.to(device))
        self.optimizer = make_optimizer(self.model, protocol, experiment.optimizer)
        if protocol.reinit:
            self.state.initial_state = {k: v.clone() for k, v in self.model.state_dict().items()}

    @property
    def metric_names(self) -> list[str]:
        """metrics.csv's columns after the base ones: the validation accuracy (empty without a
        validation set), then the acquisition's and augmentation's own (always last)."""
        exp = self.experiment
        return ["val_acc", *exp.acquisition.metric_names, *exp.augment.metric_names]

    def parts(self) -> dict[str, Any]:
        """What saves its own state into the checkpoint."""
        exp = self.experiment
        return dict(
            model=self.model,
            optimizer=self.optimizer,
            acquisition=exp.acquisition,
            augment=exp.augment,
        )

    def restore(self, saved: dict[str, Any]) -> None:
        self.state.restore(saved, self.device, self.gen, **self.parts())

    def snapshot(self, iteration: int, elapsed: float) -> dict[str, Any]:
        return self.state.snapshot(iteration, elapsed, self.gen, **self.parts())

    def acquire(self, iteration: int) -> Picks:
        """Label the query chosen from a fresh candidate subset of the pool."""
        exp = self.experiment
        with self.speed.autocast_on(self.device):
            chosen = acquire_step(
                self.model,
                self.data,
                self.state.labeled_at,
                iteration,
                exp.acquisition,
                exp.augment,
                exp.protocol,
                self.gen,
            )
        scores, partners = query_details(exp.acquisition, exp.augment, chosen)
        picks = Picks(chosen, scores, partners, exp.acquisition.extra_metrics())
        if self.state.initial_state is not None:  # protocol.reinit: train from the initial weights
            self.model.load_state_dict(self.state.initial_state)
            self.optimizer = make_optimizer(self.model, exp.protocol, exp.optimizer)
        return picks

    def train(self, iteration: int) -> dict[str, Optional[float]]:
        """Train on the labeled set; the loss, the validation accuracy of the weights kept, and
        what the augmentation reports on its training.

        The learning-rate schedule spans this iteration's epochs (training.make_scheduler). With
        ``protocol.early_stopping``, the classifier and its optimizer go back to their state after
        the best validation epoch (ties: the later epoch); the augmentation's networks do not.
        """
        exp = self.experiment
        epochs = exp.protocol.epochs if iteration > 0 else exp.protocol.initial_epochs
        schedule = make_scheduler(self.optimizer, exp.scheduler, epochs)
        best = BestEpoch(self.model, self.optimizer) if exp.protocol.early_stopping else None

        def after_epoch() -> None:
            if schedule is not None:
                schedule.step()
            if best is not None:
                best.offer(self.validate())

        with self.speed.autocast_on(self.device):
            loss = train_iteration(
                self.model,
                self.optimizer,
                self.data,
                self.state.labeled_at,
                exp.augment,
                exp.protocol,
                epochs,
                after_epoch,
            )
            check_converging(loss, iteration, self.data.num_classes, exp.protocol.lr)
            val_acc = best.restore() if best is not None else self.validate()
        # after training: an augmentation may report on its training (AdaMixup)
        extra = exp.augment.metrics() if iteration > 0 else {}
        return {"train_loss": loss, "val_acc": val_acc, **extra}

    def validate(self) -> Optional[float]:
        """Accuracy on the validation set (None without one)."""
        held_out = torch.nonzero(self.state.labeled_at == VALIDATION).flatten()
        if held_out.numel() == 0:
            return None
        x, y = self.data.x_train[held_out], self.data.y_train[held_out]
        return evaluate(self.model, x, y, self.experiment.protocol.eval_batch_size)

    def evaluate(self) -> None:
        """Test accuracy of the classifier on the whole test set."""
        with self.speed.autocast_on(self.device):
            acc = evaluate(
                self.model,
                self.data.x_test,
                self.data.y_test,
                self.experiment.protocol.eval_batch_size,
            )
        self.state.evaluated(acc)


def check_converging(loss: float, iteration: int, num_classes: int, lr: float) -> None:
    """Stop a run whose training diverged before its iteration is recorded: a loss that is not
    finite, or 100 times a uniform guess's cross-entropy (log C), which no classifier that
    learns reaches. Its finished iterations are kept; the run is marked failed."""
    if math.isfinite(loss) and loss <= 100 * math.log(max(num_classes, 2)):
        return
    raise TrainingDivergedError(
        f"training diverged at iteration {iteration} (mean loss {loss:.4g}); the iterations "
        f"before it are kept. The usual cause is the learning rate: rerun with a lower "
        f"protocol.lr (now {lr:g}, e.g. protocol.lr={lr / 100:g})"
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


class BestEpoch:
    """Early stopping's memory: the classifier's and optimizer's state after the best
    validation epoch so far."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.acc = float("-inf")
        self.saved: Optional[tuple[dict[str, Any], dict[str, Any]]] = None

    def offer(self, acc: Optional[float]) -> None:
        if acc is not None and acc >= self.acc:  # ties: the later epoch, trained longer
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.acc, self.saved = acc, (weights, copy.deepcopy(self.optimizer.state_dict()))

    def restore(self) -> Optional[float]:
        """Go back to the best epoch; its validation accuracy (None: no epoch was offered)."""
        if self.saved is None:
            return None
        self.model.load_state_dict(self.saved[0])
        self.optimizer.load_state_dict(self.saved[1])
        return self.acc


def hold_out_validation(labeled_at: torch.Tensor, size: int, seed: int) -> None:
    """Mark ``size`` random pool points as the validation set (in place), drawn from a generator
    of their own: the initial labeled set and the budget are the same as without them."""
    if size == 0:
        return
    pool = torch.nonzero(labeled_at == POOL).flatten()
    gen = torch.Generator().manual_seed(seed + VALIDATION_SEED_OFFSET)
    labeled_at[pool[torch.randperm(pool.numel(), generator=gen)[:size].to(pool.device)]] = (
        VALIDATION
    )


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
    if protocol.val_size > pool - needed:
        raise ConfigError(
            f"protocol.val_size={protocol.val_size} does not fit: of the {n_train} training points, "
            f"{n_initial} start labeled and {needed} are acquired, leaving {pool - needed} for "
            f"validation; set protocol.val_size <= {pool - needed}"
        )


def initial_labeled_at(
    data: ActiveDataset, protocol: Protocol, gen: torch.Generator
) -> torch.Tensor:
    """The labeled-at array of the initial set: 0 for its points, POOL (-1) for the others."""
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
    pool = torch.nonzero(labeled_at == POOL).flatten()
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


def train_iteration(
    model: StagedClassifier,
    optimizer: torch.optim.Optimizer,
    data: ActiveDataset,
    labeled_at: torch.Tensor,
    augment: Augment,
    protocol: Protocol,
    epochs: int,
    after_epoch: Optional[Callable[[], None]] = None,
) -> float:
    """``epochs`` passes over the labeled set (plus the augmentation's extra data), each
    followed by the augmentation's extra step and ``after_epoch`` (the learning-rate schedule,
    early stopping's validation); returns the mean loss per instance."""
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
        if after_epoch is not None:
            after_epoch()
    return total.item() / max(seen, 1)
