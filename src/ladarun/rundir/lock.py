"""``run.lock``: one process at a time runs a run directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO, Iterator, Optional

from ..errors import RunLockedError
from .files import LOCK, open_run_file


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
    f = open_run_file(out_dir / LOCK, "r+")
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
    if not path.exists() or path.is_symlink():  # a link locks nothing of this run's
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _owner(f)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
