"""What a run leaves on disk, and how it survives a kill: the run directory's files, the
checkpoint a rerun resumes from, and the guard that keeps a new run off finished results.

A run directory holds ``metrics.csv`` (one row per iteration, flushed as each ends),
``run_config.json`` (the resolved config, written when the run starts), ``checkpoint.pt``
(the whole state after the last finished iteration; deleted at the end unless kept),
``summary.json`` (written last: its presence means finished) and, after an error,
``failed.json``. Every file is replaced atomically (:func:`atomic_write`), so a kill at any
moment leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import signal
import socket
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np
from omegaconf import OmegaConf

from .errors import ConfigError, DamagedFileError, DiskFullError, RunLockedError

CHECKPOINT = "checkpoint.pt"
RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
# Written into the run directory when a run stops on an error (removed when it runs again), so
# the aggregator can tell a failed run from one that is still going or was killed.
FAILURE = "failed.json"
# Held (an OS lock, released on any exit, even SIGKILL) by the process that runs the directory.
LOCK = "run.lock"

BASE_COLUMNS = (
    "iteration",
    "n_labeled",
    "test_acc",
    "best_acc",
    "train_loss",
    "acquire_s",
    "train_s",
    "eval_s",
    "iter_s",
)

# Config keys that may differ between two invocations of the same run: where data (and the cached
# embedding) live, the progress bar, checkpointing, and the labels of the Table 1 row or sweep
# preset that chose it.
OPERATIONAL_KEYS = (
    "data_dir",
    "embedding_cache",
    "progress",
    "checkpoint",
    "keep_checkpoint",
    "method",
    "experiment",
    "logger",
)
# ``aux`` holds a protocol's budgets for auxiliary networks; an option that uses one copies the
# value into its own node (acquisition.steps: ${aux.vaal_steps}), where the comparison sees it.
# Comparing ``aux`` itself would make a change of VAAL's budget refuse every finished row.
INDIRECT_KEYS = ("aux",)


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt.

    torch.save interrupted half-way raises a second error from its own cleanup; deferring the
    interrupt keeps every file whole and the interrupt a plain KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success flush it to disk and rename it over
    ``path``. A kill mid-write leaves the old file intact (and at worst a stray ``.tmp``, which
    the next run of the directory removes once it holds the run lock)."""
    path = Path(path)
    # Named for this process: two writers never share a temporary file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    newline = None if "b" in mode else ""  # None: the default, the only value binary mode takes
    try:
        with ctrl_c_deferred(), open(tmp, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as err:
        full = disk_full(err, path.parent)  # before the temporary file frees its space
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(_disk_full_message(path)) from None
        raise


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` is a write that failed for lack of space in ``folder``.

    An OSError says so (ENOSPC, EDQUOT); torch.save's zip writer raises a RuntimeError that does
    not ("unexpected pos 935296 vs 935184" on a full tmpfs), so for those the free space left in
    ``folder`` decides.
    """
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, RuntimeError):
        try:
            stats = os.statvfs(folder)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < 16 * 2**20
    return False


def _disk_full_message(path: Path) -> str:
    return (
        f"no space left on the device writing {path}; every finished iteration is kept: free some "
        "space, then rerun the same command to resume"
    )


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


class MetricsWriter:
    """Writes metrics.csv row by row, flushed to disk as each iteration ends.

    ``resume_after=j`` continues an existing file: rows of iterations after ``j`` (written
    before a crash, but not covered by the checkpoint) are dropped first, by rewriting the
    file atomically, so a resumed run never has a duplicated or missing iteration.
    """

    def __init__(
        self, path: Path, extra_columns: Iterable[str] = (), resume_after: Optional[int] = None
    ):
        self.path = Path(path)
        self.columns = list(BASE_COLUMNS) + [c for c in extra_columns if c not in BASE_COLUMNS]
        if resume_after is not None and self.path.exists():
            kept = self._rows_up_to(resume_after)
            with atomic_write(self.path) as f:
                writer = csv.DictWriter(
                    f, fieldnames=self.columns, restval="", extrasaction="ignore"
                )
                writer.writeheader()
                writer.writerows(kept)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        else:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
            self._writer.writeheader()
        self._sync()

    def _rows_up_to(self, last: int) -> list[dict[str, str]]:
        """The rows of iterations 0..``last`` (those the checkpoint covers), all present and
        readable, or DamagedFileError: a resume must never drop a finished iteration silently."""
        fix = (
            "delete it and checkpoint.pt to run this configuration again from the start, or put "
            "back a good copy"
        )
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (csv.Error, UnicodeDecodeError) as err:
            raise DamagedFileError(f"{self.path} cannot be read ({err}); {fix}") from None
        kept = [
            r for r in rows if (r.get("iteration") or "").isdigit() and int(r["iteration"]) <= last
        ]
        found = [int(r["iteration"]) for r in kept]
        if found != list(range(last + 1)) or any(
            None in r.values() or "" in (r.get("test_acc"), r.get("n_labeled")) for r in kept
        ):
            raise DamagedFileError(
                f"{self.path} does not hold iterations 0..{last} whole, which checkpoint.pt has "
                f"finished (it has {found if len(found) < 12 else str(found[:12]) + '...'}); {fix}"
            )
        return kept

    def write(self, row: Mapping[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"metrics row has columns not declared up front: {sorted(unknown)}")
        try:
            self._writer.writerow({k: _fmt(v) for k, v in row.items()})
            self._sync()
        except OSError as err:
            if disk_full(err, self.path.parent):
                raise DiskFullError(_disk_full_message(self.path)) from None
            raise

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def learning_curve_area(path: Path) -> float:
    """Area under the learning curve: the mean test accuracy over iterations 0..N of a metrics.csv.

    The mean of the ``test_acc`` column as written (a curve on a grid of equal steps, so the mean
    is the normalised area); ``ladarun-table`` computes the same number from the same file.
    """
    with open(path, newline="") as f:
        accs = [float(r["test_acc"]) for r in csv.DictReader(f)]
    return sum(accs) / len(accs) if accs else float("nan")


# --- one process per run directory ----------------------------------------------------------
def _owner(f: IO[str]) -> str:
    f.seek(0)
    return f.read().strip() or "another process"


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` while this process runs it.

    A second process on a live run stops at once with RunLockedError, naming the owner. The
    lock is the kernel's (``flock``): it goes with the process however it ends, so a killed
    run never leaves a stale lock. Temporary files left by an earlier, killed process are
    removed once the lock is held (nobody else can be writing them).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _owner(f)
        f.close()
        raise RunLockedError(
            f"{out_dir} is being run right now by {owner}; wait for it to finish (or stop that "
            "process), then rerun the same command to resume or skip it"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        for stale in out_dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        f.truncate(0)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def running_owner(out_dir: Path) -> Optional[str]:
    """Who holds ``out_dir``'s run lock now ("PID 123 on host"), or None when no process does."""
    path = Path(out_dir) / LOCK
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _owner(f)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


# --- the checkpoint -------------------------------------------------------------------------
def rng_state(generator: Any) -> dict[str, Any]:
    """Every random stream a run draws from, so a resumed run continues exactly."""
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "active_learning": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: Any) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    generator.set_state(state["active_learning"].cpu())


class Checkpoint:
    """``checkpoint.pt`` of a run directory: the state after the last finished iteration.

    ``fingerprint`` identifies the configuration that writes it; loading one written under
    another fingerprint is refused, so a run never continues another run's state.
    """

    def __init__(self, path: Path, fingerprint: Optional[str] = None):
        self.path = Path(path)
        self.fingerprint = fingerprint

    def load(self, device: Any) -> Optional[dict[str, Any]]:
        if not self.path.exists():
            return None
        import torch

        try:
            # weights_only=False: the file holds RNG states (NumPy arrays, tuples); it is our own.
            state = torch.load(self.path, map_location=device, weights_only=False)
            missing = {"iteration", "model", "optimizer", "labeled_at", "rng"} - set(state)
        except Exception as err:  # truncated, empty or not a checkpoint: torch raises many kinds
            raise DamagedFileError(
                f"{self.path} is damaged and cannot be resumed from ({type(err).__name__}: {err}); "
                "delete it to run this configuration again from the start"
            ) from None
        if missing:
            raise DamagedFileError(
                f"{self.path} lacks {', '.join(sorted(missing))}, so it is not a ladarun checkpoint; "
                "delete it to run this configuration again from the start"
            )
        if self.fingerprint is not None and state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"{self.path} was written by a run with a different configuration; resume it with its own "
                "configuration, or choose another directory with hydra.run.dir=... (or delete the checkpoint)"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        with atomic_write(self.path, "wb") as f:
            torch.save({**state, "fingerprint": self.fingerprint}, f)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- naming a run directory -----------------------------------------------------------------
# Overrides already named by a run directory's fixed part: <dataset>/<acquisition>-<augment>/seed<seed>.
NAMED_KEYS = ("dataset", "acquisition", "augment", "seed")
# A variant name longer than this keeps a readable head and ends in a hash of the whole.
MAX_VARIANT_CHARS = 80


def run_variant(overrides: Iterable[str]) -> str:
    """The folder (with a trailing "/") that keeps a run's non-default settings apart, or "".

    ``overrides`` are the run's command-line overrides (Hydra's ``hydra.overrides.task``). Those
    the fixed part of the path already names (dataset, acquisition, augment and seed options) and
    those that never change results (OPERATIONAL_KEYS: data_dir, progress, method, experiment...)
    are left out; the rest, sorted, name the folder: ``protocol.lr=0.001,protocol.epochs=5/``. So
    every setting a sweep varies lands in its own folder, the same command always lands in the
    same one, and a sweep preset with no other overrides keeps the plain layout. A name over
    MAX_VARIANT_CHARS characters keeps the settings that fit, then "+N" (how many more) and an
    8-character hash of the whole: ``protocol.epochs=2,protocol.iterations=40,+3-b34e795c/``.
    """
    kept = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        name = key.lstrip("+~").split("@")[0]
        top = name.split(".")[0].split("/")[0]
        if name in NAMED_KEYS or top in OPERATIONAL_KEYS or top == "hydra":
            continue
        kept.append(f"{key}={value}" if sep else key)  # "~key" (a deletion) has no value
    if not kept:
        return ""
    # "/" would nest folders; spaces and quotes make paths awkward in shells.
    items = [re.sub(r"[/\\\s'\"]+", "_", item) for item in sorted(kept)]
    text = ",".join(items)
    if len(text) > MAX_VARIANT_CHARS:
        # Whole settings while they fit, then how many more and a hash of them all.
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        head: list[str] = []
        for item in items:
            if len(",".join(head + [item])) > MAX_VARIANT_CHARS - 20:
                break
            head.append(item)
        text = ",".join(head + [f"+{len(items) - len(head)}-{digest}"])
    return text + "/"


# --- guarding a run directory ---------------------------------------------------------------
def comparable(config: dict) -> dict:
    """``config`` without the keys that do not change what a run measures."""
    return {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS + INDIRECT_KEYS}


def fingerprint(config: dict) -> str:
    """A hash of everything in ``config`` that changes a run's results."""
    return hashlib.sha256(
        json.dumps(comparable(config), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a damaged file raises one line naming it and ``fix``."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFileError(f"{path} is damaged ({err}); {fix}") from None
    if not isinstance(payload, dict):
        raise DamagedFileError(f"{path} does not hold a JSON object; {fix}")
    return payload


_REDO = "delete it (and the run's other files) to run this configuration again"


def _previous_config(out_dir: Path) -> Optional[dict]:
    """The config of the run already in ``out_dir`` (finished or resumable), if any."""
    summary_path = out_dir / SUMMARY
    if summary_path.exists():
        return read_json(summary_path, _REDO).get("run", {}).get("config", {})
    if (out_dir / CHECKPOINT).exists() and (out_dir / RUN_CONFIG).exists():
        # The checkpoint's fingerprint still guards the resume without it.
        return read_json(out_dir / RUN_CONFIG, "delete it: the run resumes and writes it again")
    return None


Defaults = Callable[[], Mapping[str, Any]]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b.c": value}."""
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differences(before: dict, now: dict, defaults: Optional[Defaults] = None) -> list[str]:
    """The dotted keys in which two configs differ in what a run measures.

    A key that ``before`` lacks, set in ``now`` to its package default (``defaults()``: the
    unresolved config ladarun composes for these choices), is no difference: the key was added
    to ladarun after the earlier run, and a new key's default keeps the behaviour from before it.
    So finished runs stay finished, and unfinished ones resume, across such additions.
    """
    b, n = flatten(comparable(before)), flatten(comparable(now))
    changed = [k for k in sorted(set(b) | set(n)) if k not in b or k not in n or b[k] != n[k]]
    if defaults is None or not any(k not in b for k in changed):
        return changed
    d = flatten(defaults())
    return [k for k in changed if not (k not in b and k in n and k in d and d[k] == n[k])]


def run_fingerprint(out_dir: Path, config: dict, defaults: Optional[Defaults] = None) -> str:
    """The fingerprint a run of ``config`` in ``out_dir`` saves and checks its checkpoint with:
    the earlier run's when it is the same run under keys added since (``differences``), so its
    checkpoint still resumes; otherwise ``fingerprint(config)``."""
    previous = _previous_config(out_dir)
    if previous is not None and comparable(previous) != comparable(config):
        if not differences(previous, config, defaults):
            return fingerprint(previous)
    return fingerprint(config)


def check_existing(
    out_dir: Path, config: dict, defaults: Optional[Defaults] = None, restore: bool = True
) -> Optional[float]:
    """Guard what ``out_dir`` already holds before a run starts there.

    Returns the best accuracy of a finished run of this same config (the caller skips it),
    or None when the run should start or resume. Raises ConfigError when ``out_dir`` holds a
    finished or resumable run of a *different* config, so a new run never overwrites results.
    Keys added to ladarun since the earlier run, at their defaults, are no difference
    (``differences``). ``restore=False`` (a launcher planning jobs, before Hydra has written
    anything) leaves the folder's ``.hydra/config.yaml`` alone.
    """
    previous = _previous_config(out_dir)
    if previous is None:
        return None
    changed = differences(previous, config, defaults)
    if not changed:
        summary_path = out_dir / SUMMARY
        if not summary_path.exists():
            return None
        best = read_json(summary_path, _REDO).get("best_acc")
        if not isinstance(best, (int, float)):
            raise DamagedFileError(f"{summary_path} has no best_acc; {_REDO}")
        return float(best)
    hydra_config = out_dir / ".hydra" / "config.yaml"
    if restore and hydra_config.exists() and previous:
        # Hydra has just overwritten the earlier run's config with the new one: put it back.
        hydra_config.write_text(OmegaConf.to_yaml(OmegaConf.create(previous)))
    state = "finished" if (out_dir / SUMMARY).exists() else "resumable (unfinished)"
    raise ConfigError(
        f"{out_dir} already holds a {state} run with a different configuration (differs in: {', '.join(changed)}); "
        "choose another directory with hydra.run.dir=... or move the old run away"
    )
