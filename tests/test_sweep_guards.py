"""The guards every job of a sweep runs under, and what a job may see of the GPUs, without a GPU.

- a failed job's error keeps no frame of its run (gpu_audit.md #9: its model and data stayed on
  the GPU for the rest of a sequential sweep);
- parallel workers spread their runs over the visible GPUs (#8);
- a Slurm job without a GPU sees none (#6); submitit's local jobs get the GPUs this process may
  see (#7);
- after Ctrl-C, one line per stopped run with the command that resumes it.

tests/test_sweep_interrupts.py kills and interrupts real sweeps.
"""

import gc
import shlex
import weakref
from pathlib import Path

import pytest
import torch

from hydra_plugins.ladarun_launcher import ladarun_submitit
from hydra_plugins.ladarun_sweeper.reporting_sweeper import SweepTask
from ladarun.launchers import (
    PlannedJob,
    executor_parameters,
    interrupted_lines,
    use_gpu_of_job,
    visible_gpus,
)


class Model:
    """Stands for a model on the GPU: alive as long as anything refers to it."""


def failing_run(alive: list) -> None:
    model = Model()  # a local of the run's frame, as the loop's model and data are
    alive.append(weakref.ref(model))
    raise RuntimeError("CUDA out of memory")


def failing_task(cfg) -> None:
    failing_run(cfg["alive"])


def kept_error(task) -> BaseException:
    """Run ``task`` as Hydra's run_job does, keeping its error as the sweep keeps it."""
    try:
        task({"alive": ALIVE})
    except Exception as err:
        return err
    raise AssertionError("the task did not fail")


ALIVE: list = []


@pytest.mark.parametrize("guarded", [True, False])
def test_a_failed_jobs_error_lets_go_of_the_run(guarded):
    ALIVE.clear()
    task = SweepTask(failing_task) if guarded else failing_task
    if guarded:
        task.end_with_sweep = False
    err = kept_error(task)
    gc.collect()
    assert str(err) == "CUDA out of memory"
    # Unguarded, the kept error's traceback holds the run's frame and its model (the control:
    # the test sees the leak it guards against).
    assert (ALIVE[0]() is None) is guarded


def test_workers_spread_their_runs_over_the_gpus(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert [use_gpu_of_job(n, "auto") for n in range(5)] == [0, 1, 2, 0, 1]
    assert use_gpu_of_job(4, "cuda") == 1 and chosen == [0, 1, 2, 0, 1, 1]
    # An explicit device is left as asked.
    assert use_gpu_of_job(4, "cpu") is None and use_gpu_of_job(4, "cuda:2") is None
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert use_gpu_of_job(4, "auto") is None and len(chosen) == 6


def test_a_slurm_job_without_a_gpu_asks_for_none_and_sees_none():
    params = {"submitit_folder": "x", "max_num_timeout": 3, "setup": ["module load x"]}
    cpu = executor_parameters("slurm", params, {"gpus_per_node": 0, "cpus_per_task": 1})
    assert "gpus_per_node" not in cpu  # no gres request: CPU partitions accept the job
    assert cpu["setup"] == ["module load x", "export CUDA_VISIBLE_DEVICES="]
    assert "submitit_folder" not in cpu and "max_num_timeout" not in cpu
    gpu = executor_parameters("slurm", params, {"gpus_per_node": 1})
    assert gpu["gpus_per_node"] == 1 and gpu["setup"] == ["module load x"]


def test_visible_gpus_come_from_cuda_visible_devices():
    assert visible_gpus({}) is None  # unset: every GPU of the machine
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == (2, 3)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a2c,GPU-77f1"}) is None  # UUIDs


def test_submitit_local_jobs_get_the_gpus_this_process_may_see(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    launcher = ladarun_submitit.LocalLauncher(
        submitit_folder=str(tmp_path), gpus_per_node=1, timeout_min=5
    )
    executor = launcher._executor({})
    assert executor.parameters["visible_gpus"] == (2, 3)  # the job's CUDA_VISIBLE_DEVICES is "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(SystemExit, match="2"):
        ladarun_submitit.LocalLauncher(submitit_folder=str(tmp_path), gpus_per_node=2)._executor({})


def test_each_stopped_run_is_one_line_with_the_command_that_resumes_it(tmp_path):
    def run_dir(name: str, files: dict) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file, text in files.items():
            (path / file).write_text(text)
        return path

    metrics = "iteration,n_labeled\n0,8\n1,12\n"
    jobs = [
        (["seed=0"], run_dir("stopped", {"metrics.csv": metrics, "checkpoint.pt": ""})),
        (["seed=1"], run_dir("finished", {"metrics.csv": metrics, "summary.json": "{}"})),
        (["seed=2"], run_dir("not_started", {})),
        (["seed=3", "protocol.lr=1e-4"], tmp_path / "never_made"),
    ]
    lines = interrupted_lines(jobs, ["hydra/launcher=local", "hydra.sweep.dir=my sweep"])
    assert lines == [
        f"  {tmp_path / 'stopped'} (stopped after iteration 1): "
        "ladarun -m hydra/launcher=local 'hydra.sweep.dir=my sweep' seed=0"
    ]
    assert shlex.split(lines[0].split(": ", 1)[1])[-1] == "seed=0"


def test_ctrl_c_while_slurm_jobs_run_is_one_line_and_leaves_them_running(
    tmp_path, monkeypatch, capsys
):
    launcher = ladarun_submitit.SlurmLauncher(submitit_folder=str(tmp_path))

    def interrupted(submitted):
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "_follow", interrupted)
    job = type("Job", (), {"job_id": "42_0"})()
    with pytest.raises(SystemExit) as stop:
        launcher._wait([(PlannedJob(0, ["seed=0"], tmp_path), job)])
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err.count("\n") == 1
    assert "the jobs run on in Slurm (squeue -j 42; scancel 42 stops them)" in err
