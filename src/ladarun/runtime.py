"""Where and how a run executes: the device, random seeds, CPU allocator settings, library
versions, and the speed switches (bf16 autocast, channels_last, torch.compile; all off by default).

Each speed switch trades bit-exactness against the official code's float32 NCHW eager execution
for speed, so each is a config switch (``speed.*``) and the benchmark measures it on and off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import platform
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from .errors import ConfigError
from .models.staged import StagedClassifier

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda but no CUDA device is available to torch; use device=auto or device=cpu"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def slurm_threads(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """The intra-op thread count of a Slurm task: its ``SLURM_CPUS_PER_TASK``, or None.

    torch starts one thread per core it sees, and a task given 1 CPU of a 2-core node ran with 2
    threads; the thread count changes a CPU run's digits (docs/methods.md §14), so a task uses
    what it was given. An explicit ``OMP_NUM_THREADS`` wins (torch already follows it).
    """
    if environ.get("OMP_NUM_THREADS"):
        return None
    value = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def use_slurm_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Set torch's intra-op threads from ``slurm_threads`` when it applies; the count in use."""
    threads = slurm_threads(environ)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall-clock laps of an iteration (acquire, train, evaluate), each read after the device's
    queued work is done, and the time since the iteration and the process started."""

    def __init__(self, device: torch.device):
        self.device = device
        self.created = self._iteration = time.perf_counter()
        self.laps: dict[str, float] = {}

    def start(self) -> None:
        """A new iteration: no laps yet."""
        self._iteration, self.laps = time.perf_counter(), {}

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        synchronize(self.device)
        self.laps[name] = time.perf_counter() - began

    def iteration(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self._iteration

    def total(self) -> float:
        """Seconds since this stopwatch was made (this process's part of the run)."""
        return time.perf_counter() - self.created


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # docs/methods.md §14: the official code runs cuDNN deterministically.
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the machine type (``x86_64``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def cpu_name() -> str:
    """The CPU model and the kernel level torch runs on it, e.g. ``AMD EPYC 7B13 (AVX2)``.

    Recorded in summary.json because the same config, seed and thread count give another run on a
    CPU with other vector kernels (docs/methods.md §14); the table notes a protocol whose rows mix CPUs.
    """
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()})"


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The git commit of ladarun's source and whether its code differs from it (``dirty``).

    Only for a git checkout that tracks this package (an editable install); an installed wheel has
    no commit to report: ``{"commit": None, "dirty": None}``. Dirty counts changes to the code and
    its configs (src/, conf/, pyproject.toml, constraints.txt), not results or docs.
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(
                ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # A wheel inside a checkout (site-packages under the repo's .venv) is not that checkout's code.
    if git("ls-files", "--error-unmatch", "__init__.py") is None:
        return {"commit": None, "dirty": None}
    top = git("rev-parse", "--show-toplevel")
    paths = ["src", "conf", "pyproject.toml", "constraints.txt"]
    status = git("-C", str(top), "status", "--porcelain", "--untracked-files=no", "--", *paths)
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str]:
    import torchvision

    from .version import __version__

    return {
        "ladarun": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }


# Keep freed CPU buffers in the process heap instead of handing them back to the OS. glibc
# serves allocations above its mmap threshold (128 KiB by default, adapting up to 32 MiB) with
# fresh mmap'd pages and unmaps them on free, so every large temporary tensor costs a round of
# page faults and kernel page zeroing. On CPU runs that was a third of the wall time: InfoMixup's
# acquisition on Fashion-MNIST took 15.4 s with the defaults and 8.7 s with these settings
# (2-core machine, CNN, 2000 candidates). CUDA memory has its own caching allocator.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_large_buffers_kept = False


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process). Returns whether it applied."""
    global _large_buffers_kept
    if _large_buffers_kept:
        return True
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _large_buffers_kept = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )
    if not _large_buffers_kept:
        log.debug("mallopt refused the allocator settings; continuing with the defaults")
    return _large_buffers_kept


@dataclass
class SpeedOptions:
    autocast: Optional[str] = None  # None or "bf16": torch.autocast for every forward pass
    channels_last: bool = (
        False  # NHWC model weights and image tensors (faster convolutions on tensor cores)
    )
    compile: bool = (
        False  # torch.compile each stage of the classifier in place (state_dict keys unchanged)
    )
    compile_mode: Optional[str] = None  # torch.compile's mode, e.g. "max-autotune-no-cudagraphs"

    def __post_init__(self) -> None:
        if self.autocast not in (None, "none", "bf16"):
            raise ConfigError(f"speed.autocast must be null or bf16, got {self.autocast!r}")
        if self.autocast == "none":
            self.autocast = None

    def prepare_model(self, model: StagedClassifier) -> StagedClassifier:
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            # Module.compile works in place, so checkpoints keep their plain parameter names.
            for stage in model.stages:
                stage.compile(mode=self.compile_mode, dynamic=None)
        return model

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        return (
            x.contiguous(memory_format=torch.channels_last)
            if self.channels_last and x.dim() == 4
            else x
        )

    @contextlib.contextmanager
    def autocast_on(self, device: torch.device) -> Iterator[None]:
        if self.autocast is None:
            yield
            return
        # cache_enabled=False: the cache keeps the bf16 copy of each weight until the block
        # exits, and a block spans many optimizer steps here, so the forward passes would keep
        # using the first step's weights.
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
