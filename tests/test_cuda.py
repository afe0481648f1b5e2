"""The GPU subset (``make test-gpu``): what only a CUDA device can show of docs/gpu.md's findings.

Every test is marked ``gpu`` and skips where torch has no CUDA device; ``make test`` and
``make test-all`` hide the GPUs and leave these out. scripts/gpu_check.sh runs them first.
"""

import subprocess
import sys

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.utils import counters

from helpers import REPO, Crash, crash_at_evaluation, outcome, read_csv, tiny_protocol, toy_data
from ladarun.acquisition import MaxEntropy
from ladarun.augment import InfoMixup
from ladarun.augment.infomixup import cache_bytes, cached_features
from ladarun.data.transforms import random_crop_flip
from ladarun.errors import ConfigError
from ladarun.loop import Experiment, Learner, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.runtime import (
    SpeedOptions,
    check_fits,
    resolve_device,
    runs_on,
    seed_everything,
)

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def cuda_run(out_dir, augment=None, speed=None, **protocol):
    """The toy run of tests/helpers.py on the GPU, keeping its checkpoint."""
    return run_active_learning(
        Experiment(
            data=toy_data(),
            model_factory=cnn,
            acquisition=MaxEntropy(),
            protocol=tiny_protocol(**{"query": 4, "pool_subset": 20, **protocol}),
            seed=5,
            augment=augment,
        ),
        out_dir,
        CUDA,
        RunOptions(progress=False, keep_checkpoint=True, speed=speed or SpeedOptions()),
    )


def test_the_gpu_is_picked_and_supported():
    assert resolve_device("auto") == CUDA  # and check_gpu_supported passed
    assert runs_on(torch.cuda.get_arch_list(), *torch.cuda.get_device_capability())


def test_a_resumed_run_equals_an_uninterrupted_one_and_adam_steps_stay_on_the_cpu(
    tmp_path, monkeypatch
):
    # #1: a step counter loaded onto the GPU costs Adam two host syncs per parameter per step.
    cuda_run(tmp_path / "straight", augment=InfoMixup(policy_epochs=2), iterations=3)
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)  # iteration 2 trains, then dies before its row
        with pytest.raises(Crash):
            cuda_run(tmp_path / "resumed", augment=InfoMixup(policy_epochs=2), iterations=3)
    steps = []
    restore = Learner.restore

    def restore_and_look(self, saved):
        restore(self, saved)
        steps.extend(s["step"].device.type for s in self.optimizer.state.values())

    monkeypatch.setattr(Learner, "restore", restore_and_look)
    cuda_run(tmp_path / "resumed", augment=InfoMixup(policy_epochs=2), iterations=3)
    straight = read_csv(tmp_path / "straight" / "metrics.csv")
    assert outcome(read_csv(tmp_path / "resumed" / "metrics.csv")) == outcome(straight)
    assert steps and set(steps) == {"cpu"}, steps


def test_compiled_stages_stay_compiled_on_the_gpu(tmp_path):
    # #2 with the inductor backend: no stage falls back to eager (a hit raises here).
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            cuda_run(
                tmp_path,
                augment=InfoMixup(policy_epochs=1),
                speed=SpeedOptions(compile=True),
                iterations=1,
            )
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert graphs > 8, graphs


def test_float32_convolutions_are_not_tf32():
    # #13: cuDNN's TF32 default reads 10 mantissa bits (errors ~1e-3); float32 is ~1e-6.
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 64, 16, 16, generator=g), torch.randn(64, 64, 3, 3, generator=g)
    exact = F.conv2d(x.double(), w.double(), padding=1)
    on_gpu = F.conv2d(x.to(CUDA), w.to(CUDA), padding=1).cpu().double()
    error = ((on_gpu - exact).abs().max() / exact.abs().max()).item()
    assert error < 1e-5, error


def test_bf16_check_follows_the_gpu():
    # #14: refused below compute capability 8.0, accepted from it
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:
        SpeedOptions(autocast="bf16").check_device(CUDA)
    else:
        with pytest.raises(ConfigError, match="speed.autocast"):
            SpeedOptions(autocast="bf16").check_device(CUDA)


def test_crop_flip_keeps_channels_last_on_the_gpu():
    # #15
    x = torch.randn(16, 3, 32, 32, device=CUDA).contiguous(memory_format=torch.channels_last)
    assert random_crop_flip(x[torch.arange(8, device=CUDA)]).is_contiguous(
        memory_format=torch.channels_last
    )


def test_the_cache_estimate_is_the_gpu_memory_the_cache_takes():
    # #16: the estimate InfoMixup checks against the free memory is what cached_features allocates
    data = toy_data(n_train=600)
    model, x = cnn(1, 3).to(CUDA).eval(), data.x_train.to(CUDA)
    indices = torch.arange(500, device=CUDA)
    for k in (1, 2):
        needed = cache_bytes(model, x, 500, k)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        cached = cached_features(model, x, indices, k, batch=100)
        torch.cuda.synchronize()
        taken = torch.cuda.memory_allocated() - before
        assert needed == cached.nbytes and needed <= taken < needed + 512, (k, needed, taken)
        del cached
    check_fits(needed, CUDA, "the cache", "set protocol.pool_subset")
    free, total = torch.cuda.mem_get_info()
    with pytest.raises(ConfigError, match="protocol.pool_subset"):
        check_fits(2 * total, CUDA, "the cache", "set protocol.pool_subset")


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_alone(tmp_path):
    # #11: a device=cpu run (with its checkpoint and summary.json) never initialises CUDA.
    code = (
        "import sys, torch; sys.path.insert(0, 'tests'); from helpers import toy_run; "
        "from ladarun.loop import RunOptions; "
        f"toy_run({str(tmp_path)!r}, iterations=2, "
        "options=RunOptions(progress=False, keep_checkpoint=True)); "
        "print(torch.cuda.is_initialized())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
