"""Algorithm 1 of the LADA paper, for any acquisition x augmentation pair.

This module knows nothing of Hydra: ``run_active_learning`` takes built objects and can be
called from plain Python (the tests do).
"""
from __future__ import annotations

import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .acquisition.base import Acquisition, AcquisitionContext
from .augment.base import Augment, NoAugment
from .data.base import ActiveDataset
from .errors import ConfigError
from .malloc import keep_large_buffers
from .models.staged import StagedClassifier
from .protocol import Protocol
from .records import MetricsWriter, learning_curve_area, write_json_atomic
from .speed import SpeedOptions
from .training import evaluate, train_epoch

log = logging.getLogger(__name__)

ModelFactory = Callable[..., StagedClassifier]  # (in_channels=, num_classes=, image_size=) -> model


CHECKPOINT = "checkpoint.pt"


@dataclass
class RunSummary:
    best_acc: float
    final_acc: float
    n_labeled: int
    iterations: int
    total_s: float
    device: str
    metrics_path: Path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available to torch; use device=auto or device=cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # METHODS.md §14: the official code runs cuDNN deterministically.
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def initial_labeled(y: torch.Tensor, num_classes: int, per_class: int, generator: torch.Generator) -> torch.Tensor:
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


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a run draws from, so a resumed run continues exactly."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "active_learning": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    generator.set_state(state["active_learning"].cpu())


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the old file intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    # weights_only=False: the file holds RNG states (NumPy arrays, tuples), and it is our own.
    return torch.load(path, map_location=device, weights_only=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def library_versions() -> dict[str, str]:
    import torchvision

    from . import __version__

    return {
        "ladarun": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }


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
    n_cand = pool.numel() if protocol.pool_subset is None else min(protocol.pool_subset, pool.numel())
    candidates = pool[torch.randperm(pool.numel(), generator=generator)[:n_cand].to(pool.device)]
    ctx = AcquisitionContext(model, data, torch.nonzero(labeled_at >= 0).flatten(), generator, protocol.score_batch_size)
    chosen = augment.acquire(acquisition, ctx, candidates, protocol.query)
    if chosen.numel() != protocol.query or torch.unique(chosen).numel() != chosen.numel():
        raise RuntimeError(f"acquisition returned {chosen.numel()} indices, expected {protocol.query} distinct")
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
    deterministic: bool = True,
    progress: bool = True,
    run_info: Optional[dict[str, Any]] = None,
    checkpoint: bool = True,
    keep_checkpoint: bool = False,
    fingerprint: Optional[str] = None,
    speed: Optional[SpeedOptions] = None,
) -> RunSummary:
    """Run Algorithm 1 and write ``metrics.csv`` and ``summary.json`` into ``out_dir``.

    With ``checkpoint`` on, the state after every finished iteration is saved atomically to
    ``out_dir/checkpoint.pt``; a later call on the same ``out_dir`` continues from it, and the
    result is the same as that of an uninterrupted run. ``fingerprint`` identifies the
    configuration: resuming a checkpoint written under another fingerprint is refused. The
    checkpoint is deleted once summary.json is written, unless ``keep_checkpoint``.
    ``run_info`` (e.g. the resolved config) is stored in summary.json as is. ``speed``
    switches on bf16 autocast, channels_last or torch.compile (all off by default).
    """
    augment = augment or NoAugment()
    speed = speed or SpeedOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    state = load_checkpoint(ckpt_path, device) if checkpoint and ckpt_path.exists() else None
    if state is not None and fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{ckpt_path} was written by a run with a different configuration; resume it with its own "
            "configuration, or choose another directory with hydra.run.dir=... (or delete the checkpoint)"
        )
    start = time.perf_counter()
    keep_large_buffers()
    seed_everything(seed, deterministic)
    # Active-learning decisions (initial set, candidate subsets, tie-breaks) draw from their own
    # generator, so they do not depend on how many random numbers training consumed.
    gen = torch.Generator().manual_seed(seed)

    data = data.to(device)
    data.x_train, data.x_test = speed.prepare_images(data.x_train), speed.prepare_images(data.x_test)
    n_train = data.y_train.numel()
    labeled = initial_labeled(data.y_train, data.num_classes, protocol.initial_per_class, gen)
    check_budget(protocol, n_train, labeled.numel())
    # labeled_at[i] = the iteration at which point i was labeled (0 = initial set), -1 = pool.
    labeled_at = torch.full((n_train,), -1, dtype=torch.long, device=device)
    labeled_at[labeled] = 0

    def new_model() -> tuple[StagedClassifier, torch.optim.Optimizer]:
        model = model_factory(in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size)
        model = speed.prepare_model(model.to(device))
        return model, torch.optim.Adam(model.parameters(), lr=protocol.lr)

    model, optimizer = new_model()
    initial_state = {k: v.clone() for k, v in model.state_dict().items()} if protocol.reinit else None

    first_it, best, acc, elapsed_before, resumes = 0, -1.0, 0.0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        labeled_at = state["labeled_at"].to(device)
        initial_state = state["initial_state"]
        acquisition.load_state_dict(state["acquisition"])
        augment.load_state_dict(state["augment"])
        best, acc, elapsed_before = state["best_acc"], state["test_acc"], state["elapsed_s"]
        first_it = state["iteration"] + 1
        resumes = state["resumes"] + [first_it]
        set_rng_state(state["rng"], gen)
        log.info("Resuming %s from its checkpoint after iteration %d.", out_dir, state["iteration"])

    extra_columns = list(acquisition.metric_names) + list(augment.metric_names)
    metrics_path = out_dir / "metrics.csv"
    with MetricsWriter(metrics_path, extra_columns, resume_after=first_it - 1 if state is not None else None) as writer:
        bar = tqdm(
            range(first_it, protocol.iterations + 1), desc=f"{data.name}", unit="it", disable=not progress,
            dynamic_ncols=True, initial=first_it, total=protocol.iterations + 1,
        )
        for it in bar:
            t0 = time.perf_counter()
            extra: dict[str, float] = {}
            if it == 0:
                acquire_s = 0.0
                epochs = protocol.initial_epochs
            else:
                with speed.autocast_on(device):
                    acquire_step(model, data, labeled_at, it, acquisition, augment, protocol, gen)
                _sync(device)
                acquire_s = time.perf_counter() - t0
                extra.update(acquisition.extra_metrics())
                epochs = protocol.epochs
                if initial_state is not None:
                    model.load_state_dict(initial_state)
                    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr)
            t1 = time.perf_counter()
            with speed.autocast_on(device):
                loss = train_iteration(model, optimizer, data, labeled_at, augment, protocol, epochs)
            if it > 0:  # after training: an augmentation may report what happened while it trained (AdaMixup)
                extra.update(augment.metrics())
            _sync(device)
            t2 = time.perf_counter()
            with speed.autocast_on(device):
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
                    "acquire_s": acquire_s,
                    "train_s": t2 - t1,
                    "eval_s": t3 - t2,
                    "iter_s": t3 - t0,
                    **extra,
                }
            )
            if checkpoint:
                # After the CSV row: a crash between the two redoes this iteration on resume,
                # and MetricsWriter drops its row first.
                save_atomic(
                    {
                        "iteration": it,
                        "fingerprint": fingerprint,
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
                    },
                    ckpt_path,
                )
            bar.set_postfix(acc=f"{acc:.2f}", best=f"{best:.2f}")
        bar.close()

    total_s = elapsed_before + time.perf_counter() - start
    summary = RunSummary(best, acc, int((labeled_at >= 0).sum()), protocol.iterations, total_s, str(device), metrics_path)
    write_json_atomic(
        out_dir / "summary.json",
        {
            "best_acc": summary.best_acc,
            "final_acc": summary.final_acc,
            "area": learning_curve_area(metrics_path),  # mean test accuracy over iterations 0..N (metrics.csv)
            "n_labeled": summary.n_labeled,
            "iterations": summary.iterations,
            "total_s": round(total_s, 3),
            "resumed_at": resumes,
            "aux_params": acquisition.aux_parameters() + augment.aux_parameters(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "versions": library_versions(),
            "run": run_info or {},
        },
    )
    if not keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    return summary
