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
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional

from ..errors import DamagedFileError, DiskFullError, FileAccessError, UnsafePathError

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


# os.open flags of the modes run files are written in; O_NOFOLLOW: a symbolic link planted at a
# run file's path (to a file outside the run folder) is refused, never written through.
_WRITE_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+": os.O_RDWR | os.O_CREAT,
}


def open_run_file(path: Path, mode: str = "w", newline: Optional[str] = "") -> IO[Any]:
    """``open(path, mode)`` for a file a run writes, refusing a symbolic link at ``path``.

    ``mode`` is one of w, x, a, r+ (plus b); r+ creates the file and keeps its content.
    """
    binary = "b" in mode
    try:
        fd = os.open(path, _WRITE_FLAGS[mode.replace("b", "")] | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePathError(
                f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only regular "
                "files inside its folder: remove the link, then rerun"
            ) from None
        raise
    py_mode = {"w": "w", "x": "w", "a": "a", "r+": "r+"}[mode.replace("b", "")] + (
        "b" if binary else ""
    )
    return os.fdopen(fd, py_mode, newline=None if binary else newline)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success flush it to disk and rename it over
    ``path``. A kill mid-write leaves the old file intact (and at worst a stray ``.tmp``, which
    the next run of the directory removes once it holds the run lock). Neither the temporary
    file nor ``path`` is followed if it is a symbolic link: the rename replaces a link itself."""
    path = Path(path)
    # Named for this process: two writers never share a temporary file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of this PID (or a planted link): never reused
    try:
        with ctrl_c_deferred(), open_run_file(tmp, "x" + mode.replace("w", "")) as f:
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


# Every file a run writes into its folder (and Hydra's log): none may be a symbolic link.
RUN_FILES = (
    LOCK,
    METRICS,
    QUERIES,
    CHECKPOINT,
    SUMMARY,
    RUN_CONFIG,
    FAILURE,
    "ladarun.log",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
)


def refuse_links(out_dir: Path) -> None:
    """Raise UnsafePathError when a run file in ``out_dir`` is a symbolic link: a run reads and
    writes only regular files inside its folder (the folder itself may be a link, e.g. to a
    scratch disk)."""
    for name in RUN_FILES:
        path = out_dir / name
        if path.is_symlink():
            raise UnsafePathError(
                f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only regular "
                "files inside its folder: remove the link, then rerun"
            )


class RunLogHandler(logging.FileHandler):
    """The run's ``ladarun.log`` (Hydra's job log, conf/config.yaml's hydra.job_logging): opened
    at its first record, never through a symbolic link. A launch refused before it logs anything
    (another process holds the run) leaves the file as it was; a link there gets nothing (the
    log goes to os.devnull) and the run stops on it with one line (refuse_links)."""

    def __init__(
        self,
        filename: "str | Path",
        mode: str = "a",
        encoding: Optional[str] = None,
        delay: bool = True,
    ):
        super().__init__(filename, mode, encoding=encoding, delay=True)

    def _open(self) -> Any:
        path = Path(self.baseFilename)
        if path.is_symlink() or not path.parent.is_dir():  # a link, or a folder since removed
            return open(os.devnull, "a")
        return open_run_file(path, "a", newline=None)


def write_config_files(out_dir: Path, config_yaml: str, overrides_yaml: Optional[str]) -> None:
    """``.hydra/config.yaml`` (the run's unresolved config, which the reports read) and
    ``.hydra/overrides.yaml``, written by the run once it holds its folder (Hydra writes none:
    hydra.output_subdir is null), so a refused launch leaves a live run's files as they were."""
    hydra_dir = out_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(hydra_dir / "config.yaml") as f:
        f.write(config_yaml)
    if overrides_yaml is not None:
        with atomic_write(hydra_dir / "overrides.yaml") as f:
            f.write(overrides_yaml)


@contextlib.contextmanager
def os_errors_in_one_line() -> Iterator[None]:
    """Turn the OSErrors a user fixes (no space left, no permission, a read-only file system)
    into one-line errors naming the file; any other passes unchanged."""
    try:
        yield
    except OSError as err:
        where = err.filename or "a file of the run"
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(disk_full_message(Path(str(where)))) from None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise FileAccessError(
                f"{where}: {err.strerror}; make it (and its folder) readable and writable for "
                "you, or use other folders (data_dir=..., hydra.run.dir=..., hydra.sweep.dir=...)"
            ) from None
        raise


def check_writable(folder: Path) -> None:
    """Raise a one-line error when ``folder`` (or, if it does not exist yet, the nearest folder
    above it that does) cannot be written or has no space left: before a run creates anything."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileAccessError(
            f"{existing} is not writable, so {folder} cannot be created there; run ladarun from a "
            "writable folder, or choose one with hydra.run.dir=... (hydra.sweep.dir=... for -m)"
        )
    stats = os.statvfs(existing)
    if stats.f_bavail * stats.f_frsize < 2**20:
        raise DiskFullError(disk_full_message(Path(folder)))
