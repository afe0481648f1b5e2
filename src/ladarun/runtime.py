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


def resolve_device(name: str, environ: Mapping[str, str] = os.environ) -> torch.device:
    """``auto``, ``cpu`` or ``cuda`` as a torch device; refuses a GPU torch cannot run on.

    ``auto`` falls back to the CPU only where no GPU was meant for this process: a job that holds
    one (Slurm's ``SLURM_JOB_GPUS``, a non-empty ``CUDA_VISIBLE_DEVICES``) that torch cannot use
    would otherwise train for hours on the CPU (docs/gpu.md #4).
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        check_gpu_supported()
        return torch.device("cuda")
    held = gpus_given(environ)
    if name == "cuda" or held:
        given = f"device={name} and this process was given GPU {held}" if held else "device=cuda"
        raise ConfigError(
            f"{given}, but torch cannot use a GPU: {why_no_cuda(environ)}; or set device=cpu to "
            "run on the CPU"
        )
    return torch.device("cpu")


#: CUDA_VISIBLE_DEVICES values that hide every GPU (Slurm writes NoDevFiles for a job without one).
_NO_GPUS = ("", "-1", "NoDevFiles")


def gpus_given(environ: Mapping[str, str] = os.environ) -> str:
    """The GPUs this process was given, as its environment names them, or ``""`` for none.

    ``CUDA_VISIBLE_DEVICES`` decides when it is set (``make test`` hides every GPU with an empty
    one); otherwise a Slurm job's own GPUs.
    """
    if "CUDA_VISIBLE_DEVICES" in environ:
        visible = environ["CUDA_VISIBLE_DEVICES"].strip()
        return "" if visible in _NO_GPUS else visible
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if environ.get(key, "").strip():
            return environ[key].strip()
    return ""


def why_no_cuda(environ: Mapping[str, str] = os.environ) -> str:
    """Why ``torch.cuda.is_available()`` is False, as far as torch can tell."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    hidden = ""
    if "CUDA_VISIBLE_DEVICES" in environ:
        visible = environ["CUDA_VISIBLE_DEVICES"].strip()
        hidden = f"CUDA_VISIBLE_DEVICES={visible!r} " + (
            "hides every GPU, or "
            if visible in _NO_GPUS
            else "names none of this machine's GPUs, or "
        )
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} and finds no GPU: "
        f"{hidden}the NVIDIA driver is missing or older than CUDA {torch.version.cuda} needs "
        "(nvidia-smi prints the CUDA version the driver supports): update the driver or install "
        "a torch built for an older CUDA"
    )


def runs_on(arch_list: list[str], major: int, minor: int) -> bool:
    """Whether code built for ``arch_list`` (``torch.cuda.get_arch_list()``) runs on a GPU of
    compute capability ``major.minor``: a cubin ``sm_XY`` runs on X.Y and later minors of X,
    PTX ``compute_XY`` is compiled for any later GPU, an ``a``-suffixed cubin only on X.Y."""
    capability = 10 * major + minor
    for arch in arch_list:
        kind, _, code = arch.partition("_")
        exact = code.endswith("a")
        built = int(code.rstrip("af"))
        if kind == "compute" and built <= capability:
            return True
        if kind == "sm" and (
            built == capability or (not exact and built // 10 == major and built <= capability)
        ):
            return True
    return False


def check_gpu_supported() -> None:
    """Refuse a GPU the installed torch has no kernels for, instead of the first kernel's
    "no kernel image is available" (the pinned wheel starts at sm_75: a V100 is sm_70)."""
    arch_list = torch.cuda.get_arch_list()
    if torch.version.cuda is None or not arch_list:
        return
    major, minor = torch.cuda.get_device_capability()
    if not runs_on(arch_list, major, minor):
        raise ConfigError(
            f"the GPU {torch.cuda.get_device_name()} has compute capability {major}.{minor}, which "
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) was not built for "
            f"({' '.join(arch_list)}): install a torch built for sm_{major}{minor}, or set device=cpu"
        )


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


def check_fits(needed: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse, naming ``fix``, when ``needed`` bytes exceed the GPU memory still free: a ConfigError
    line instead of an out-of-memory traceback. Nothing to check on the CPU."""
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    # memory torch's caching allocator holds but no tensor uses is free to it as well
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if needed > free:
        raise ConfigError(
            f"{what} need {needed / 2**30:.1f} GiB of GPU memory, and {free / 2**30:.1f} GiB "
            f"are free on {torch.cuda.get_device_name(device)}: {fix}"
        )


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
    # float32 means float32 on every device: cuDNN's convolutions default to TF32 (a 10-bit
    # mantissa) on Ampere and later, which would set GPU digits apart from CPU ones (docs/gpu.md #13).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


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


def library_versions() -> dict[str, Any]:
    """The versions a run's digits depend on; on a GPU also CUDA's, cuDNN's and the TF32 flags."""
    import torchvision

    from .version import __version__

    return {
        "ladarun": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,  # None for a CPU-only build of torch
        "cudnn": cudnn_version(),
        **tf32_flags(),
    }


def cudnn_version() -> Any:
    """cuDNN's version (``92400`` is 9.24.0) in a process that has used CUDA, else None: asking
    starts CUDA on every GPU, which a CPU run leaves alone. A cuDNN that torch refuses (another
    version found first on the library path) is named instead of stopping the summary."""
    if not torch.cuda.is_initialized():
        return None
    try:
        return torch.backends.cudnn.version()
    except RuntimeError as err:
        return f"unusable: {str(err)[:120]}"


def tf32_flags() -> dict[str, Any]:
    """Whether cuDNN's convolutions and cuBLAS's matrix products may use TF32."""
    try:
        return {
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    except RuntimeError:  # code in this process mixed torch's old and new precision flags
        return {
            "cudnn_tf32": torch.backends.cudnn.conv.fp32_precision,  # type: ignore[attr-defined]
            "matmul_tf32": torch.backends.cuda.matmul.fp32_precision,
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


#: Compiled variants one stage may keep before torch.compile falls back to eager for it. A
#: stage meets train and eval mode, grad, no_grad and a frozen classifier (the look-ahead), each
#: at a first and then a dynamic shape: 25 variants over the CNN's 5 stages in one iteration.
STAGE_RECOMPILE_LIMIT = 32


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
    # torch.compile's backend; the tests use "eager" (the same guards and recompiles, no codegen)
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.autocast not in (None, "none", "bf16"):
            raise ConfigError(f"speed.autocast must be null or bf16, got {self.autocast!r}")
        if self.autocast == "none":
            self.autocast = None
        if self.compile_mode in ("none", "default"):
            self.compile_mode = None
        if self.compile_mode is not None:
            check_compile_mode(self.compile_mode)

    def check_device(self, device: torch.device) -> None:
        """Refuse a switch the device cannot run as intended (before anything is written)."""
        if self.autocast == "bf16" and device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            if major < 8:  # cuDNN's bf16 convolutions need Ampere; older GPUs emulate them
                raise ConfigError(
                    f"speed.autocast=bf16 needs a GPU of compute capability 8.0 or later; "
                    f"{torch.cuda.get_device_name(device)} is {major}.{minor}, where torch "
                    "emulates bf16 more slowly than float32: drop speed.autocast"
                )

    def prepare_model(self, model: StagedClassifier) -> StagedClassifier:
        self.check_device(next(model.parameters()).device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            # Module.compile works in place, so checkpoints keep their plain parameter names.
            # Every module's compiled call is the same function (Module._call_impl), whose
            # compiled variants torch counts together, 8 at most: isolate_recompiles gives each
            # stage its own count (docs/gpu.md #2).
            for stage in model.stages:
                stage.compile(
                    mode=self.compile_mode,
                    backend=self.compile_backend,
                    dynamic=None,
                    isolate_recompiles=True,
                    recompile_limit=STAGE_RECOMPILE_LIMIT,
                )
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


def check_compile_mode(mode: str) -> None:
    """Refuse an unknown torch.compile mode, and those that run CUDA graphs: a graph's outputs
    are overwritten by its next call, and the look-ahead keeps several outputs of a stage at once
    (cached_features' chunks), interleaving train, eval and no_grad calls (docs/gpu.md #3)."""
    from torch._inductor import list_mode_options

    modes = list_mode_options()
    safe = [m for m, options in modes.items() if not options.get("triton.cudagraphs")]
    if mode not in modes:
        raise ConfigError(
            f"speed.compile_mode must be null or one of {', '.join(safe)}; got {mode!r}"
        )
    if mode not in safe:
        raise ConfigError(
            f"speed.compile_mode={mode} runs the classifier's stages as CUDA graphs, whose outputs "
            "the next call overwrites while the look-ahead still holds them; use "
            "speed.compile_mode=max-autotune-no-cudagraphs or default"
        )
