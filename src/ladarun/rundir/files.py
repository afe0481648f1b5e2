"""The files of a run directory, written so that a kill at any moment leaves each one whole.

A run directory holds ``metrics.csv`` (one row per iteration, flushed as each ends),
``queries.csv`` (one row per labeled point), ``run_config.json`` (the resolved config, written
when the run starts), ``checkpoint.pt`` (the whole state after the last finished iteration;
deleted at the end unless kept), ``summary.json`` (written last: its presence means finished),
``run.lock`` (held by the process that runs it) and, after an error, ``failed.json``. Every file
but metrics.csv's appended rows is replaced atomically (:func:`atomic_write`), so a kill leaves
either the old or the new version, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from ..errors import DamagedFileError, DiskFullError

CHECKPOINT = "checkpoint.pt"
RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
QUERIES = "queries.csv"
# Written into the run directory when a run stops on an error (removed when it runs again), so
# the aggregator can tell a failed run from one that is still going or was killed.
FAILURE = "failed.json"
# Held (an OS lock, released on any exit, even SIGKILL) by the process that runs the directory.
LOCK = "run.lock"


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
            raise DiskFullError(disk_full_message(path)) from None
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


def disk_full_message(path: Path) -> str:
    return (
        f"no space left on the device writing {path}; every finished iteration is kept: free some "
        "space, then rerun the same command to resume"
    )


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a damaged file raises one line naming it and ``fix``."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFileError(f"{path} is damaged ({err}); {fix}") from None
    if not isinstance(payload, dict):
        raise DamagedFileError(f"{path} does not hold a JSON object; {fix}")
    return payload


# What Hydra writes into a run folder before the job starts.
HYDRA_FILES = {".hydra", "ladarun.log"}


def only_hydra_files(out_dir: Path) -> bool:
    """True when ``out_dir`` holds nothing but what Hydra writes before a job starts."""
    return out_dir.is_dir() and all(p.name in HYDRA_FILES for p in out_dir.iterdir())


def remove_fresh(out_dir: Path, stop: Path) -> None:
    """Remove ``out_dir`` (Hydra's files only) and the parents it emptied, up to ``stop``: a run
    refused before it wrote anything leaves no folder that a table would list."""
    shutil.rmtree(out_dir, ignore_errors=True)
    stop = stop.resolve()
    for parent in out_dir.resolve().parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: another run lives there
            break
