"""The GPU path's guards that a CPU can check (docs/gpu.md): torch.compile's recompile limit,
compile modes with CUDA graphs, a GPU torch cannot use, TF32, bf16 on old GPUs, channels_last
through the crop/flip, the look-ahead cache's GPU memory, the checkpoint's size, make test
hiding the GPUs. What only a GPU can show is in tests/test_cuda.py and scripts/gpu_check.sh."""

import json
import subprocess

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import ladarun.augment.infomixup as infomixup_module
from helpers import CPU, REPO, read_csv, tiny_protocol, toy_data, toy_run
from ladarun.acquisition import MaxEntropy
from ladarun.augment import InfoMixup
from ladarun.augment.infomixup import cache_bytes, cached_features
from ladarun.config import check_settings
from ladarun.data.transforms import random_crop_flip
from ladarun.errors import ConfigError
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.rundir.files import CHECKPOINT, SUMMARY
from ladarun.runtime import (
    SpeedOptions,
    check_fits,
    gpus_given,
    library_versions,
    resolve_device,
    runs_on,
    seed_everything,
)

CUDA = torch.device("cuda")
WHEEL_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned cu130 wheel's


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def fake_gpu(monkeypatch, capability=(9, 0), archs=WHEEL_ARCHS, name="NVIDIA H100", free=80):
    """torch.cuda as a machine with one GPU of ``capability`` and ``free`` GiB free would show it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    fake_gpu_memory(monkeypatch, free * 2**30, name=name)


def fake_gpu_memory(monkeypatch, free, cached=0, name="NVIDIA H100"):
    """torch.cuda on a GPU with ``free`` bytes free, and ``cached`` more that torch's caching
    allocator holds for no tensor (beside 1 GiB it holds for tensors)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2**30 + cached)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**30)


def no_gpu(monkeypatch, cuda_build="13.0"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)


# --- #2: torch.compile per stage, and the recompile limit ---------------------------------------


def test_compiled_stages_stay_compiled_through_an_iteration(tmp_path, one_thread):
    # Every stage's compiled call is Module._call_impl; sharing its 8 cache entries, the stages
    # fell back to eager at the first evaluation. A hit now raises instead of running eager.
    torch._dynamo.reset()
    counters.clear()
    speed = SpeedOptions(compile=True, compile_backend="eager")  # the same guards, no codegen
    try:
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            run_active_learning(
                Experiment(
                    data=toy_data(),
                    model_factory=cnn,
                    acquisition=MaxEntropy(),
                    protocol=tiny_protocol(query=4, pool_subset=20, iterations=1),
                    seed=0,
                    augment=InfoMixup(policy_epochs=1),  # train, eval, no_grad, a frozen model
                ),
                tmp_path,
                CPU,
                RunOptions(progress=False, speed=speed),
            )
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    print("unique graphs", graphs)
    assert graphs > 8, graphs  # more variants than one shared cache could hold
    assert len(read_csv(tmp_path / "metrics.csv")) == 2


# --- #3: compile modes that run CUDA graphs ---------------------------------------------------


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_compile_modes_with_cuda_graphs_are_refused(mode):
    with pytest.raises(ConfigError) as err:
        SpeedOptions(compile=True, compile_mode=mode)
    assert "CUDA graphs" in one_line(err) and "max-autotune-no-cudagraphs" in one_line(err)


@pytest.mark.parametrize("mode", [None, "default", "max-autotune-no-cudagraphs"])
def test_compile_modes_without_cuda_graphs_are_accepted(mode):
    assert SpeedOptions(compile=True, compile_mode=mode).compile_mode in (None, mode)


def test_an_unknown_compile_mode_names_the_choices():
    with pytest.raises(ConfigError) as err:
        SpeedOptions(compile_mode="fast")
    assert "max-autotune-no-cudagraphs" in one_line(err) and "reduce-overhead" not in str(err.value)


def test_compile_mode_is_checked_before_anything_is_written(compose_cfg):
    with pytest.raises(ConfigError, match="CUDA graphs"):
        check_settings(compose_cfg(["speed.compile=true", "speed.compile_mode=reduce-overhead"]))


# --- #4: a GPU torch cannot use ---------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, given",
    [
        ({}, ""),
        ({"CUDA_VISIBLE_DEVICES": ""}, ""),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, ""),
        ({"CUDA_VISIBLE_DEVICES": "1,3"}, "1,3"),
        ({"SLURM_JOB_GPUS": "2"}, "2"),
        ({"SLURM_JOB_GPUS": "2", "CUDA_VISIBLE_DEVICES": ""}, ""),  # hidden on purpose
    ],
)
def test_gpus_given_reads_the_environment(environ, given):
    assert gpus_given(environ) == given


def test_auto_without_a_gpu_is_the_cpu(monkeypatch):
    no_gpu(monkeypatch)
    assert resolve_device("auto", {}) == CPU
    assert resolve_device("auto", {"CUDA_VISIBLE_DEVICES": ""}) == CPU


@pytest.mark.parametrize("environ", [{"SLURM_JOB_GPUS": "0"}, {"CUDA_VISIBLE_DEVICES": "0"}])
def test_auto_refuses_a_gpu_it_was_given_but_cannot_use(monkeypatch, environ):
    # A Slurm job holding a GPU under a driver older than the wheel's CUDA trained on 4 CPUs.
    no_gpu(monkeypatch)
    with pytest.raises(ConfigError) as err:
        resolve_device("auto", environ)
    message = one_line(err)
    assert "GPU 0" in message and "driver" in message and "CUDA 13.0" in message
    assert "device=cpu" in message


def test_cuda_on_a_cpu_only_torch_says_so(monkeypatch):
    no_gpu(monkeypatch, cuda_build=None)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda", {})
    assert "CPU-only build" in one_line(err)


def test_a_gpu_older_than_the_wheel_is_refused(monkeypatch):
    fake_gpu(monkeypatch, capability=(7, 0), name="Tesla V100")
    for name in ("auto", "cuda"):
        with pytest.raises(ConfigError) as err:
            resolve_device(name, {})
        message = one_line(err)
        assert "Tesla V100" in message and "7.0" in message and "sm_75" in message


@pytest.mark.parametrize("capability", [(7, 5), (8, 9), (9, 0), (12, 0)])
def test_a_gpu_the_wheel_runs_on_is_used(monkeypatch, capability):
    fake_gpu(monkeypatch, capability=capability)
    assert resolve_device("auto", {}) == CUDA and resolve_device("cuda", {}) == CUDA


@pytest.mark.parametrize(
    "archs, capability, runs",
    [
        (["sm_75", "sm_80"], (8, 6), True),  # a cubin runs on later minors of its major
        (["sm_80", "sm_86"], (8, 0), True),
        (["sm_86"], (8, 0), False),  # ... not on earlier ones
        (["sm_75", "sm_80"], (9, 0), False),  # ... nor on another major
        (["sm_80", "compute_80"], (9, 0), True),  # PTX is compiled for any later GPU
        (["sm_90a"], (9, 0), True),
        (["sm_90a"], (10, 0), False),  # an arch-specific cubin runs on its own GPU only
        (WHEEL_ARCHS, (6, 0), False),
    ],
)
def test_runs_on(archs, capability, runs):
    assert runs_on(archs, *capability) is runs


def test_device_cpu_never_asks_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("CUDA was asked"))
    assert resolve_device("cpu", {"SLURM_JOB_GPUS": "0"}) == CPU


# --- #13: TF32, and what summary.json records -------------------------------------------------


def test_seed_everything_turns_tf32_off():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # torch's default for cuDNN
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        seed_everything(0)
        flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    assert flags == (False, False)
    seed_everything(0)
    versions = library_versions()
    assert versions["cudnn_tf32"] is False and versions["matmul_tf32"] is False


def test_versions_are_read_when_old_and_new_precision_flags_are_mixed():
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # torch's new API, one op each way
    torch.backends.cudnn.rnn.fp32_precision = "tf32"
    try:
        with pytest.raises(RuntimeError):  # what torch's old getter does then
            torch.backends.cudnn.allow_tf32  # noqa: B018
        assert library_versions()["cudnn_tf32"] == "ieee"
    finally:
        seed_everything(0)  # the old API sets both again
    assert torch.backends.cudnn.allow_tf32 is False


def test_an_unusable_cudnn_is_named_not_raised(monkeypatch):
    # torch refuses a cuDNN of another version found first on LD_LIBRARY_PATH; a CPU run's
    # summary.json must still be written.
    def refuse():
        raise RuntimeError("cuDNN version incompatibility: PyTorch was compiled against (9, 24, 0)")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a run that used CUDA
    monkeypatch.setattr(torch.backends.cudnn, "version", refuse)
    assert library_versions()["cudnn"].startswith("unusable: cuDNN version incompatibility")


def test_summary_records_cuda_cudnn_and_tf32(tmp_path, one_thread):
    toy_run(tmp_path, iterations=1)
    versions = json.loads((tmp_path / SUMMARY).read_text())["versions"]
    assert versions["cuda"] == torch.version.cuda
    assert versions["cudnn"] is None  # asked only where the run used CUDA (it starts CUDA)
    assert versions["cudnn_tf32"] is False and versions["matmul_tf32"] is False


# --- #14: bf16 on a GPU before Ampere ---------------------------------------------------------


def test_bf16_is_refused_below_compute_capability_8(monkeypatch):
    fake_gpu(monkeypatch, capability=(7, 5), name="Tesla T4")
    with pytest.raises(ConfigError) as err:
        SpeedOptions(autocast="bf16").check_device(CUDA)
    assert all(word in one_line(err) for word in ("Tesla T4", "7.5", "drop speed.autocast"))
    SpeedOptions().check_device(CUDA)  # float32 is fine there
    SpeedOptions(autocast="bf16").check_device(CPU)  # and bf16 on the CPU


def test_bf16_from_compute_capability_8_is_accepted(monkeypatch):
    fake_gpu(monkeypatch, capability=(8, 0))
    SpeedOptions(autocast="bf16").check_device(CUDA)


def test_bf16_on_an_old_gpu_is_refused_before_anything_is_written(monkeypatch, compose_cfg):
    fake_gpu(monkeypatch, capability=(7, 5), name="Tesla T4")
    with pytest.raises(ConfigError, match="Tesla T4"):
        check_settings(compose_cfg(["device=cuda", "speed.autocast=bf16"]))


# --- #15: channels_last through the crop/flip -------------------------------------------------


def test_crop_flip_keeps_channels_last():
    x = torch.randn(6, 3, 8, 8)
    torch.manual_seed(0)
    plain = random_crop_flip(x)
    torch.manual_seed(0)
    nhwc = random_crop_flip(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert torch.equal(nhwc, plain)  # the same crops and flips, another layout
    assert plain.is_contiguous()  # an NCHW batch stays NCHW


# --- #16: the look-ahead's cache on the GPU ---------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_cache_bytes_is_what_cached_features_holds(k):
    data = toy_data()
    model = cnn(1, 3).eval()
    indices = torch.arange(37)
    assert cache_bytes(model, data.x_train, 37, k) == (
        cached_features(model, data.x_train, indices, k, batch=10).nbytes
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):  # speed.autocast=bf16 halves it
        cached = cached_features(model, data.x_train, indices, k, batch=10)
        assert cache_bytes(model, data.x_train, 37, k) == cached.nbytes


def test_check_fits_refuses_more_than_the_free_gpu_memory(monkeypatch):
    fake_gpu_memory(monkeypatch, free=6 * 2**30, cached=2 * 2**30)  # 8 GiB free to torch
    check_fits(7 * 2**30, CUDA, "the cache", "set protocol.pool_subset")
    with pytest.raises(ConfigError) as err:
        check_fits(14 * 2**30, CUDA, "the cache", "set protocol.pool_subset")
    assert one_line(err) == (
        "the cache need 14.0 GiB of GPU memory, and 8.0 GiB are free on NVIDIA H100: "
        "set protocol.pool_subset"
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: pytest.fail("asked"))
    check_fits(10**15, CPU, "the cache", "set protocol.pool_subset")  # the CPU: nothing to check


def test_the_whole_pool_on_a_small_gpu_is_refused_at_the_first_acquisition(
    tmp_path, monkeypatch, one_thread
):
    # The loop runs on the CPU; InfoMixup's check sees a GPU with 100 KiB free.
    fake_gpu_memory(monkeypatch, free=100 * 1024)
    asked = []

    def on_the_gpu(needed, device, what, fix):
        asked.append(needed)
        check_fits(needed, CUDA, what, fix)

    monkeypatch.setattr(infomixup_module, "check_fits", on_the_gpu)
    with pytest.raises(ConfigError, match=r"candidates need .* GiB .*protocol.pool_subset"):
        toy_run(tmp_path, augment=InfoMixup(policy_epochs=1), query=4, pool_subset=None)
    # h^k of every unlabeled point: 120 - 6 labeled, with k = 1 or 2 (16 x 8 x 8 floats each)
    assert asked == [114 * 16 * 8 * 8 * 4]
    assert len(read_csv(tmp_path / "metrics.csv")) == 1  # iteration 0 is kept


# --- #17: the checkpoint's size -----------------------------------------------------------------


def test_the_checkpoint_holds_the_model_and_optimizer_and_little_else(tmp_path, one_thread):
    toy_run(tmp_path, iterations=2, options=RunOptions(progress=False, keep_checkpoint=True))
    model = cnn(1, 3, image_size=8)
    weights = sum(t.nbytes for t in model.state_dict().values())
    params = sum(p.nbytes for p in model.parameters())
    # the model, Adam's two moments per parameter, the labeled set (120 int64), the RNG states
    size = (tmp_path / CHECKPOINT).stat().st_size
    assert weights + 2 * params < size < weights + 2 * params + 120 * 8 + 64 * 1024, size


# --- #18: make test runs on the CPU ---------------------------------------------------------------


def test_make_test_hides_the_gpus_and_leaves_out_the_gpu_tests():
    for target in ("test", "test-all"):
        dry = subprocess.run(
            ["make", "-n", target],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        pytest_line = next(line for line in dry.splitlines() if "pytest" in line)
        assert pytest_line.startswith("CUDA_VISIBLE_DEVICES= ") and "not gpu" in pytest_line
