"""Helpers the test modules share (pytest fixtures are in conftest.py; hand-written run folders in runs_factory.py).

Paths and options; toy data, protocol and whole runs of the loop; metrics.csv; crash injection;
acquisition contexts and models; the ``ladarun`` console script in a subprocess.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

import ladarun.loop as loop_module
from ladarun.acquisition import MaxEntropy
from ladarun.acquisition.base import AcquisitionContext
from ladarun.augment import Augment
from ladarun.conf import CONF_DIR
from ladarun.data.base import ActiveDataset
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.protocol import Protocol
from ladarun.runner import run_from_config
from ladarun.training import train_epoch

# --- paths and options -----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it, as in the developers' checkouts.
SHARED_DATA = REPO.parent / "shared" / "data"
HAS_FASHION = (SHARED_DATA / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()

CPU = torch.device("cpu")
# The tiny synthetic run: 4 classes x 2 initial labels, then +4 per iteration (8, 12, 16).
SMOKE = ["dataset=synthetic", "protocol=smoke", "progress=false"]


def group_options(group: str) -> list[str]:
    """The options of a config group: the file names of conf/<group>/."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# --- metrics.csv -----------------------------------------------------------------------------


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def without_timings(rows):
    """The rows without their wall-clock columns (``*_s``), which differ between equal runs."""
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


def outcome(rows):
    # Everything but the wall-clock columns must be identical.
    return [
        (r["iteration"], r["n_labeled"], r["test_acc"], r["best_acc"], r["train_loss"])
        for r in rows
    ]


# --- toy data, protocol and runs of the loop -------------------------------------------------


def toy_data(n_train=120, n_test=40, classes=3) -> ActiveDataset:
    g = torch.Generator().manual_seed(7)
    protos = torch.randn(classes, 1, 8, 8, generator=g)
    y = torch.arange(n_train + n_test) % classes
    x = protos[y] + 0.5 * torch.randn(n_train + n_test, 1, 8, 8, generator=g)
    return ActiveDataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes)


def tiny_protocol(**kw) -> Protocol:
    base = dict(
        iterations=3,
        initial_per_class=2,
        query=5,
        pool_subset=30,
        initial_epochs=2,
        epochs=1,
        batch_size=4,
        lr=1e-3,
        reinit=False,
        eval_batch_size=1000,
        score_batch_size=100,
    )
    base.update(kw)
    return Protocol(**base)


def toy_run(
    tmp_path,
    acquisition=None,
    augment=None,
    seed=0,
    options=None,
    optimizer=None,
    scheduler=None,
    **kw,
):
    """A whole run on toy_data; ``kw`` overrides tiny_protocol's values."""
    return run_active_learning(
        Experiment(
            data=toy_data(),
            model_factory=cnn,
            acquisition=acquisition or MaxEntropy(),
            protocol=tiny_protocol(**kw),
            seed=seed,
            augment=augment,
            optimizer=optimizer,
            scheduler=scheduler,
        ),
        tmp_path,
        CPU,
        options or RunOptions(progress=False),
    )


# --- crash injection -------------------------------------------------------------------------


class Crash(Exception):
    pass


def crash_at_evaluation(monkeypatch, call_number, error=Crash):
    """Make the loop's ``call_number``-th evaluation raise ``error`` (call 1 is iteration 0's)."""
    crash_on_call(monkeypatch, loop_module, "evaluate", call_number, error)


def crash_on_call(monkeypatch, owner, name, call_number, error=Crash):
    """Make ``owner.name``'s ``call_number``-th call raise ``error`` (a kill at that point)."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise error()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


def stopped_toy_run(tmp_path, monkeypatch):
    """A toy_run stopped by an error after iteration 1: metrics.csv and checkpoint.pt are on disk."""
    import pytest

    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            toy_run(tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    return tmp_path / "metrics.csv"


# --- models and acquisition contexts ---------------------------------------------------------


def trained_model(data: ActiveDataset, epochs: int = 15, seed: int = 0, **model_options):
    torch.manual_seed(seed)
    model = cnn(
        data.in_channels, data.num_classes, width=8, image_size=data.image_size, **model_options
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # a quarter of the data: confident but not perfect
    idx = torch.arange(0, data.y_train.numel(), 4)
    for _ in range(epochs):
        train_epoch(model, opt, data.x_train, data.y_train, idx, 16)
    return model.eval()


def context(model, data, seed=0):
    """The first 6 points labeled; score batches of 50."""
    return AcquisitionContext(model, data, torch.arange(6), torch.Generator().manual_seed(seed), 50)


def make_ctx(n=60, classes=3, labeled=6, dropout=0.0, seed=0, size=8, channels=1):
    """Random images, a fresh small CNN, the first ``labeled`` points labeled; score batches of 7."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.arange(n) % classes
    data = ActiveDataset("toy", x, y, x[:5], y[:5], classes)
    torch.manual_seed(0)
    model = cnn(in_channels=channels, num_classes=classes, dropout=dropout)
    return AcquisitionContext(
        model, data, torch.arange(labeled), torch.Generator().manual_seed(seed), score_batch_size=7
    )


class LookAhead(Augment):
    """A stand-in look-ahead augmentation: it only declares that it needs a per-instance score."""

    needs_per_instance_score = True


def check_smoke_run(compose_cfg, tmp_path, name, columns, overrides=()):
    """``acquisition=name`` on the synthetic smoke protocol writes its CSV with ``columns`` filled."""
    run_from_config(compose_cfg(SMOKE + [f"acquisition={name}", *overrides]), tmp_path)
    rows = read_csv(tmp_path / "metrics.csv")
    # 4 classes x 2, then +4 per iteration
    assert [int(r["n_labeled"]) for r in rows] == [
        8,
        12,
        16,
    ]
    assert list(rows[0])[-len(columns) :] == list(columns)
    for r in rows[1:]:
        assert all(math.isfinite(float(r[c])) for c in columns)


# --- the console script, in this process or in a subprocess -----------------------------------

LADARUN = Path(sys.executable).parent / "ladarun"


@dataclass
class CliResult:
    """What a ``ladarun`` invocation returned and printed (subprocess.CompletedProcess's names)."""

    returncode: int
    stdout: str
    stderr: str


def ladarun(*args, cwd, env_extra=None) -> CliResult:
    """Run ``ladarun ARGS`` in this process, as the console script would in ``cwd``, without
    LADARUN_DATA; returns its exit code, stdout and stderr.

    The same entry point as the installed script (``ladarun.cli:main``), without a fresh
    interpreter and torch import per call. Tests that need a real process (a kill, Ctrl-C, a
    second process on a lock, the installed script itself) use :func:`ladarun_process`.
    """
    from hydra.core.global_hydra import GlobalHydra

    from ladarun import cli

    env = {**(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    saved_env = {k: os.environ.get(k) for k in [*env, "LADARUN_DATA"]}
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    out, err, code = io.StringIO(), io.StringIO(), 0
    os.environ.update(env)
    os.environ.pop("LADARUN_DATA", None)
    sys.argv = ["ladarun", *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exit_:
                code = (
                    exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                )
            except Exception:  # what the console script would print as its traceback
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        GlobalHydra.instance().clear()
        for handler in root.handlers:  # Hydra's job logging: console and the run's ladarun.log
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return CliResult(code, out.getvalue(), err.getvalue())


def in_mount_namespace(script: str, cwd) -> subprocess.CompletedProcess:
    """Run the shell ``script`` as root of a private user and mount namespace (``unshare -rm``),
    where it may mount a tmpfs or bind a folder read-only; ``ladarun`` in it runs one thread,
    without LADARUN_DATA."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LADARUN_DATA", None)
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )


def _can_mount() -> bool:
    probe = "mount -t tmpfs -o size=1m tmpfs /mnt"
    return shutil.which("unshare") is not None and (
        subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0
    )


#: Whether in_mount_namespace can mount here (user namespaces allowed).
CAN_MOUNT = _can_mount()


def sigint_as_a_terminal_gives_it() -> None:
    """``preexec_fn`` for a subprocess a test will Ctrl-C: SIGINT back to its default, as a
    terminal's foreground job has it. A shell's background job (``make test &``, ``nohup``) starts
    with SIGINT ignored, which its children inherit; Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ladarun_process(*args, cwd, env_extra=None) -> subprocess.CompletedProcess:
    """Run the installed ``ladarun`` in a subprocess in ``cwd``, unbuffered and without
    LADARUN_DATA. The timeout only catches a hang."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("LADARUN_DATA", None)
    return subprocess.run(
        [str(LADARUN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )
