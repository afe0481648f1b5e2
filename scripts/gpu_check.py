"""The first GPU's checks: what docs/gpu.md's findings need a CUDA device to show.

    .venv/bin/python scripts/gpu_check.py [--out DIR] [--skip-tests]

Run it from the repository root on a machine with one NVIDIA GPU (a few minutes). It prints one
line per check, ``PASS``, ``FAIL`` or ``INFO`` (a measurement to record in docs/gpu.md), headed by
the finding's number, and exits 1 if a check failed, 2 without a GPU. docs/gpu.md describes the
expected output. ``--out`` keeps the runs it makes (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ladarun.runtime import SpeedOptions, resolve_device, runs_on, seed_everything

REPO = Path(__file__).resolve().parents[1]
LADARUN = Path(sys.executable).parent / "ladarun"
SMOKE = ["dataset=synthetic", "protocol=smoke", "progress=false"]
CUDA = torch.device("cuda")

Result = tuple[str, str]  # (PASS | FAIL | INFO, what was seen)
CHECKS: list[tuple[str, str, Callable[[Path], list[Result]]]] = []


def check(findings: str, title: str):
    def register(fn: Callable[[Path], list[Result]]) -> Callable[[Path], list[Result]]:
        CHECKS.append((findings, title, fn))
        return fn

    return register


def verdict(ok: bool, seen: str) -> Result:
    return ("PASS" if ok else "FAIL", seen)


def ladarun(out: Path, *overrides: str, env: dict[str, str] | None = None):
    """One ``ladarun`` run into ``out`` (in a subprocess); the finished process."""
    cmd = [str(LADARUN), *SMOKE, f"hydra.run.dir={out}", *overrides]
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@check("#4", "the GPU, its driver and the wheel")
def environment(out: Path) -> list[Result]:
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        driver = smi.stdout.strip() or smi.stderr.strip()
    except FileNotFoundError:
        driver = "not installed"
    capability = torch.cuda.get_device_capability()
    archs = torch.cuda.get_arch_list()
    return [
        ("INFO", f"nvidia-smi: {driver}"),
        (
            "INFO",
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}, built for {' '.join(archs)}",
        ),
        verdict(runs_on(archs, *capability), f"compute capability {capability} runs this wheel"),
        verdict(str(resolve_device("auto")) == "cuda", "device=auto resolves to cuda"),
    ]


@check("#4", "a GPU the job was given but torch cannot see is refused, not replaced by the CPU")
def refused_when_hidden(out: Path) -> list[Result]:
    # An index past the GPUs: torch sees none, while the environment says one was given.
    done = ladarun(out / "hidden", "device=auto", env={"CUDA_VISIBLE_DEVICES": "99"})
    line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    ok = done.returncode == 2 and "cannot use a GPU" in line
    return [verdict(ok, f"exit {done.returncode}: {line[:160]}")]


@check("#1 #2 #11 #13 #14 #15 #16", "the GPU tests (tests/test_cuda.py)")
def gpu_tests(out: Path) -> list[Result]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rA", "tests/test_cuda.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    (out / "test_cuda.log").write_text(done.stdout + done.stderr)
    results = [
        verdict(status == "PASSED", f"{name}")
        for status, name in re.findall(
            r"^(PASSED|FAILED|ERROR|SKIPPED) \S*::(\S+)", done.stdout, re.M
        )
    ]
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    seen = f"{tail} ({time.perf_counter() - began:.0f} s; log: test_cuda.log)"
    return results + [("INFO", seen) if results else verdict(False, f"no test ran: {seen}")]


@check("#13 #18", "a smoke run on the GPU records CUDA, cuDNN and TF32 off")
def smoke_run(out: Path) -> list[Result]:
    done = ladarun(out / "smoke", "device=cuda")
    if done.returncode != 0:
        return [verdict(False, f"exit {done.returncode}: {done.stderr.strip()[-300:]}")]
    summary = json.loads((out / "smoke" / "summary.json").read_text())
    versions = summary["versions"]
    hidden = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
    ).stdout.strip()
    return [
        verdict(torch.cuda.get_device_name() in summary["device"], f"device {summary['device']}"),
        verdict(
            versions["cuda"] == torch.version.cuda
            and versions["cudnn"] == torch.backends.cudnn.version()
            and versions["cudnn_tf32"] is False
            and versions["matmul_tf32"] is False,
            f"versions: cuda {versions['cuda']}, cudnn {versions['cudnn']}, "
            f"cudnn_tf32 {versions['cudnn_tf32']}, matmul_tf32 {versions['matmul_tf32']}",
        ),
        verdict(
            hidden == "False", f"with CUDA_VISIBLE_DEVICES= (make test) torch sees a GPU: {hidden}"
        ),
        ("INFO", f"smoke run {summary['total_s']:.1f} s on the GPU"),
    ]


@check("#3", "a compile mode with CUDA graphs is refused in one line")
def cudagraph_mode(out: Path) -> list[Result]:
    done = ladarun(
        out / "graphs", "device=cuda", "speed.compile=true", "speed.compile_mode=reduce-overhead"
    )
    lines = done.stderr.strip().splitlines()
    return [
        verdict(
            done.returncode == 2 and "CUDA graphs" in lines[-1],
            f"exit {done.returncode}: {lines[-1][:120]}",
        )
    ]


@check("#13", "float32 and TF32 convolution errors against float64")
def tf32_error(out: Path) -> list[Result]:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 64, 16, 16, generator=g), torch.randn(64, 64, 3, 3, generator=g)
    exact = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)

    def error() -> float:
        got = torch.nn.functional.conv2d(x.to(CUDA), w.to(CUDA), padding=1).cpu().double()
        return ((got - exact).abs().max() / exact.abs().max()).item()

    seed_everything(0)
    fp32 = error()
    torch.backends.cudnn.allow_tf32 = True  # torch's default, for comparison
    tf32 = error()
    seed_everything(0)
    return [verdict(fp32 < 1e-5, f"float32 {fp32:.1e}, TF32 (torch's default) {tf32:.1e}")]


@check("#15", "channels_last training steps: the crop/flip output kept NHWC or turned NCHW")
def channels_last(out: Path) -> list[Result]:
    from ladarun.data.transforms import random_crop_flip
    from ladarun.models import resnet18

    seed_everything(0, deterministic=False)
    bf16 = torch.cuda.get_device_capability()[0] >= 8  # else refused (#14): float32
    speed = SpeedOptions(channels_last=True, autocast="bf16" if bf16 else None)
    model = speed.prepare_model(resnet18(3, 10, image_size=32).to(CUDA))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = speed.prepare_images(torch.randn(1000, 3, 32, 32, device=CUDA))
    y = torch.randint(0, 10, (1000,), device=CUDA)

    def steps(layout: Callable[[torch.Tensor], torch.Tensor], n: int = 60) -> float:
        torch.cuda.synchronize()
        began = time.perf_counter()
        for i in range(n):
            rows = torch.arange(10 * i, 10 * i + 10, device=CUDA)
            with speed.autocast_on(CUDA):
                loss = torch.nn.functional.cross_entropy(
                    model(layout(random_crop_flip(x[rows]))), y[rows]
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - began) / n * 1e3

    steps(lambda b: b, 20)  # warm-up
    kept, nchw = [], []
    for _ in range(3):  # interleaved
        kept.append(steps(lambda b: b))
        nchw.append(steps(lambda b: b.contiguous()))
    return [
        (
            "INFO",
            f"ResNet-18, batch 10, {'bf16' if bf16 else 'float32'}: {min(kept):.2f} ms/step "
            f"with NHWC kept, {min(nchw):.2f} ms/step NCHW",
        )
    ]


@check("#12", "deterministic algorithms (never enabled): which ops would raise")
def deterministic_algorithms(out: Path) -> list[Result]:
    from ladarun.augment.stn import SpatialTransformer
    from ladarun.models import cnn

    results = []
    torch.use_deterministic_algorithms(True)
    try:
        for name, net in (
            ("CNN (AdaptiveAvgPool2d)", cnn(1, 10, image_size=28)),
            ("InfoSTN's STN (grid_sample)", SpatialTransformer(1, 28)),
        ):
            x = torch.randn(4, 1, 28, 28, device=CUDA)
            try:
                net.to(CUDA)(x).float().sum().backward()
                results.append(("INFO", f"{name}: backward runs"))
            except RuntimeError as err:
                results.append(("INFO", f"{name}: raises: {str(err).splitlines()[0][:100]}"))
    finally:
        torch.use_deterministic_algorithms(False)
    return results


@check("#16", "the look-ahead cache of the whole CIFAR pool against this GPU's memory")
def whole_pool(out: Path) -> list[Result]:
    from ladarun.augment.infomixup import cache_bytes
    from ladarun.models import resnet18

    model = resnet18(3, 10, image_size=32).to(CUDA).eval()
    x = torch.randn(1, 3, 32, 32, device=CUDA)
    free, total = torch.cuda.mem_get_info()
    needed = {k: cache_bytes(model, x, 50000, k) / 2**30 for k in (1, 2)}
    return [
        (
            "INFO",
            f"50000 candidates: k=1 {needed[1]:.1f} GiB, k=2 {needed[2]:.1f} GiB; "
            f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out tests/test_cuda.py")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_check: torch sees no CUDA device here; run it on a machine with a GPU",
            file=sys.stderr,
        )
        sys.exit(2)
    out = args.out or Path(tempfile.mkdtemp(prefix="ladarun-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for findings, title, fn in CHECKS:
        if args.skip_tests and fn is gpu_tests:
            continue
        print(f"== {findings}: {title}", flush=True)
        try:
            results = fn(out)
        except Exception as err:  # one broken check must not hide the others
            results = [
                ("FAIL", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            ]
        for status, seen in results:
            print(f"   {status}  {seen}", flush=True)
            failed += status == "FAIL"
    print(f"gpu_check: {failed} failed; runs and logs in {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
