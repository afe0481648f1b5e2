"""The embedding cache: one file per dataset and embedding settings, shared by every run and seed.

The file is named from a fingerprint of the settings, the dataset's name and a digest of its
training images, so a change of any of them builds (and keeps) another file, and a file is only
ever read for the settings and data it was built from. Its location is the config key
``embedding_cache`` (default ``<data_dir>/embeddings``), which, like ``data_dir``, never changes a
run's results. Processes that need the same file at once take turns on a lock: one builds, the
others wait and read what it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import ConfigError, DamagedFileError, DiskFullError
from .simclr import SimCLR

log = logging.getLogger("ladarun")

# Bump when the training code changes what a given set of settings produces.
FORMAT = 1
KEY = "embedding_cache"  # the config key users set, named in every error


def data_digest(x: torch.Tensor) -> str:
    """SHA-256 of the images' float32 values in NCHW order (the same for channels_last copies)."""
    return hashlib.sha256(x.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


def features_digest(features: torch.Tensor) -> str:
    """A short digest of an embedding, which a resumed run checks against the one it started with."""
    return hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest()[:16]


def fingerprint(spec: SimCLR, dataset: str, digest: str) -> str:
    payload = {"format": FORMAT, "dataset": dataset, "data": digest, "settings": spec.settings()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _allows_writes(path: Path) -> bool:
    """Whether ``path`` (a folder) can be written: the OS says so and its mode has a write bit.

    The mode check matters for root, whom the OS lets write anywhere: a folder whose mode allows
    nobody to write (a shared, read-only data folder) is treated as read-only for root too.
    """
    return os.access(path, os.W_OK | os.X_OK) and bool(path.stat().st_mode & 0o222)


class EmbeddingCache:
    """Embeddings on disk in ``folder``; ``features`` returns one, building it if needed."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(os.path.expanduser(str(folder)))

    def check_writable(self) -> None:
        """One line naming ``embedding_cache`` when the folder cannot be created or written.

        An existing read-only folder passes (it may hold prebuilt embeddings); building a
        missing one there fails with the same message.
        """
        if self.folder.is_dir():
            return
        parent = self.folder
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not _allows_writes(parent):
            raise ConfigError(self._unwritable(parent))

    def _unwritable(self, where: Path) -> str:
        return (
            f"{KEY}={self.folder} is not writable ({where} allows no writes); set "
            f"{KEY}=<a writable folder> for the embedding TypiClust and ProbCover build once per dataset"
        )

    def path(self, spec: SimCLR, dataset: str, digest: str) -> Path:
        return self.folder / f"{dataset}-{spec.name}-{fingerprint(spec, dataset, digest)[:16]}.pt"

    def features(self, spec: SimCLR, dataset: str, x: torch.Tensor) -> torch.Tensor:
        """The (N, D) embedding of the training images ``x``: read from the cache, or built and saved."""
        return self.record(spec, dataset, x)["features"]

    def record(self, spec: SimCLR, dataset: str, x: torch.Tensor) -> dict[str, Any]:
        """The cache file's whole record (features, encoder weights, settings, build time), built if missing."""
        digest = data_digest(x)
        path = self.path(spec, dataset, digest)
        expected = fingerprint(spec, dataset, digest)
        if path.exists():
            return {**self._load(path, expected, x.shape[0]), "path": path}
        with self._lock(path):
            if path.exists():  # another process built it while this one waited
                return {**self._load(path, expected, x.shape[0]), "path": path}
            log.info("embedding: building %s for %s (cached as %s)", spec.name, dataset, path)
            t0, cpu0 = time.perf_counter(), time.process_time()
            features, encoder = spec.train(x)
            record = {
                "format": FORMAT,
                "fingerprint": expected,
                "dataset": dataset,
                "settings": spec.settings(),
                "build_s": time.perf_counter() - t0,
                # CPU seconds of this process: the cost on a shared machine, where wall time is not
                "build_cpu_s": time.process_time() - cpu0,
                "threads": torch.get_num_threads(),
                "features": features,
                "encoder": encoder,
            }
            self._save(path, record)
            log.info(
                "embedding: built in %.0f s (%.0f CPU s)", record["build_s"], record["build_cpu_s"]
            )
        return {**record, "path": path}

    def derived(self, embedding: Path, name: str, compute: Callable[[], float]) -> float:
        """A number computed from the embedding cached at ``embedding`` (ProbCover's δ): computed
        once and kept beside it in ``<file>.derived.json``; a read-only cache computes it each time."""
        side = embedding.with_name(embedding.name + ".derived.json")
        if name in (values := self._read_derived(side)):
            return float(values[name])
        value = float(compute())
        try:
            with self._lock(embedding):
                values = {**self._read_derived(side), name: value}
                tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, side)
        except ConfigError:  # not writable: nothing is kept
            pass
        return value

    def _read_derived(self, side: Path) -> dict[str, Any]:
        if not side.exists():
            return {}
        try:
            values = json.loads(side.read_text())
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise DamagedFileError(
                f"{side} is damaged ({type(err).__name__}); delete it and the next run computes it again"
            ) from None
        return values

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not _allows_writes(self.folder):
                raise PermissionError(errno.EACCES, "read-only", str(self.folder))
            f = open(path.with_name(path.name + ".lock"), "a+")
        except PermissionError:
            raise ConfigError(self._unwritable(self.folder)) from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the process ends, however it ends
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _save(self, path: Path, record: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        try:
            torch.save(record, tmp)
            os.replace(tmp, path)  # readers see the whole file or none
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise DiskFullError(f"no space left for the embedding cache {path}") from None
            raise

    def _load(self, path: Path, expected: str, n: int) -> dict[str, Any]:
        fix = f"delete it and the next run rebuilds it (or point {KEY} elsewhere)"
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            features = record["features"]
            found = record["fingerprint"]
        except Exception as err:  # a truncated or foreign file fails in many ways
            raise DamagedFileError(
                f"the embedding cache {path} is damaged ({type(err).__name__}); {fix}"
            ) from None
        if found != expected:
            raise DamagedFileError(
                f"the embedding cache {path} was built with other settings or data "
                f"(settings {record.get('settings')}, dataset {record.get('dataset')}); {fix}"
            )
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] != n:
            raise DamagedFileError(
                f"the embedding cache {path} does not hold {n} embeddings; {fix}"
            )
        if not bool(torch.isfinite(features).all()):
            raise DamagedFileError(f"the embedding cache {path} holds non-finite values; {fix}")
        return record
