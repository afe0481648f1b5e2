"""ladarun's Slurm launcher without Slurm: presets' resources, threads, the finished-run filter,
the dry run, sbatch's refusal, the wait without accounting and the time-limit rule.

``make test-slurm`` (scripts/test_slurm.py) runs the same launcher on a real one-node cluster.
"""

import os
import re
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from helpers import SMOKE, group_options, ladarun
from hydra_plugins.ladarun_launcher import ladarun_submitit
from ladarun.launchers import (
    JobLostError,
    PlannedJob,
    TimeLimitError,
    note_time_limit,
    run_resources,
    sbatch_refusal,
    timed_out,
)
from ladarun.runner import run_from_config
from ladarun.runtime import slurm_threads, use_slurm_threads

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
DRY = ["-m", "hydra/launcher=slurm", "hydra.launcher.dry_run=true", *SMOKE]


def resources(compose_hydra, overrides):
    """What the launcher gives a run of ``overrides``: its protocol's entry and the top level."""
    cfg = compose_hydra(["hydra/launcher=slurm", *overrides])
    launcher = cfg.hydra.launcher
    params = {k: launcher[k] for k in launcher if k != "resources"}
    table = OmegaConf.to_container(launcher.resources)
    return run_resources(params, table, cfg.protocol.name)


def job_lines(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if re.match(r"#\d+\s", ln)]


# --- resources of the presets ---------------------------------------------------------------
def test_cpu_protocols_ask_for_no_gpu_and_the_paper_for_one(compose_hydra):
    quick = resources(compose_hydra, ["experiment=table1_quick"])
    assert quick["gpus_per_node"] == 0  # Table 1 on the CPU protocol: no GPU, ...
    assert (quick["cpus_per_task"], quick["mem_gb"]) == (2, 4)  # ... nor 4 CPUs and 32 GB
    assert resources(compose_hydra, ["protocol=smoke"])["gpus_per_node"] == 0
    paper = resources(compose_hydra, ["experiment=table1"])
    assert (paper["gpus_per_node"], paper["cpus_per_task"], paper["mem_gb"]) == (1, 4, 32)
    assert paper["timeout_min"] == 240


def test_every_protocol_has_its_resources_and_the_cnn_ones_ask_for_no_gpu(compose_hydra):
    """gpu_audit.md #5: paper_budget (the CPU learner) fell to ``default`` and asked for a GPU."""
    table = compose_hydra(["hydra/launcher=slurm"]).hydra.launcher.resources
    for protocol in group_options("protocol"):
        assert protocol in table, f"protocol={protocol} has no resources entry"
        model = compose_hydra([f"protocol={protocol}"]).model.name
        gpus = resources(compose_hydra, [f"protocol={protocol}"])["gpus_per_node"]
        assert (gpus == 0) == (model == "cnn"), (protocol, model, gpus)
    budget = resources(compose_hydra, ["experiment=table1_budget"])
    assert (budget["gpus_per_node"], budget["cpus_per_task"]) == (0, 1)


def test_a_launcher_key_on_the_command_line_wins_for_every_run(compose_hydra):
    # The paper's protocol on a CPU cluster: no GPU, the rest of the paper's entry kept.
    cpu = resources(compose_hydra, ["experiment=table1", "hydra.launcher.gpus_per_node=0"])
    assert (cpu["gpus_per_node"], cpu["cpus_per_task"], cpu["mem_gb"]) == (0, 4, 32)
    short = resources(compose_hydra, ["protocol=quick", "hydra.launcher.timeout_min=5"])
    assert (short["timeout_min"], short["gpus_per_node"]) == (5, 0)


def test_a_protocol_of_ones_own_gets_the_default_entry():
    table = {"paper": {"gpus_per_node": 1}, "default": {"gpus_per_node": 1, "cpus_per_task": 8}}
    got = run_resources({"partition": "gpu", "mem_gb": None}, table, "mine")
    assert (got["gpus_per_node"], got["cpus_per_task"], got["partition"]) == (1, 8, "gpu")


# --- threads ----------------------------------------------------------------------------------
def test_threads_follow_slurm_cpus_per_task_unless_omp_num_threads_is_set():
    assert slurm_threads({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert slurm_threads({"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert slurm_threads({}) is None  # outside Slurm: torch's own default
    assert slurm_threads({"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "2"}) is None
    assert slurm_threads({"SLURM_CPUS_PER_TASK": "0"}) is None
    assert slurm_threads({"SLURM_CPUS_PER_TASK": "x"}) is None
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert use_slurm_threads({"SLURM_CPUS_PER_TASK": "1"}) == 1 == torch.get_num_threads()
        assert use_slurm_threads({}) == 1  # nothing to apply: unchanged
    finally:
        torch.set_num_threads(before)


# --- dry run and the finished-run filter ------------------------------------------------------
def test_dry_run_lists_jobs_folders_and_resources_and_submits_nothing(tmp_path):
    res = ladarun(*DRY, "seed=0,1", cwd=tmp_path, env_extra=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    lines = job_lines(res.stdout)
    assert (
        len(lines) == 2
        and "2 would be submitted as 1 array(s); nothing was submitted" in res.stdout
    )
    for seed, line in enumerate(lines):
        assert f"seed={seed}" in line and f"/seed{seed}" in line and " new " in line
        assert "cpus=1 gpus=0 mem=2GB time=30min" in line
    assert not (tmp_path / "outputs" / ".submitit").exists()
    assert not list((tmp_path / "outputs").glob("synthetic"))


def test_finished_runs_are_left_out_before_submission(tmp_path, compose_cfg, one_thread):
    listed = job_lines(ladarun(*DRY, "seed=0,1", cwd=tmp_path, env_extra=ONE_THREAD).stdout)
    run_dir = tmp_path / re.search(r"\s(outputs/\S+seed0)\s", listed[0]).group(1)
    run_from_config(compose_cfg([*SMOKE, "seed=0"]), run_dir)  # seed 0 finishes
    res = ladarun(*DRY, "seed=0,1", cwd=tmp_path, env_extra=ONE_THREAD)
    lines = job_lines(res.stdout)
    assert "finished (best" in lines[0] and lines[0].rstrip().endswith("-")
    assert " new " in lines[1] and "1 would be submitted" in res.stdout
    # A relaunch of the finished part submits nothing, and says so (without needing Slurm).
    again = ladarun(
        "-m", "hydra/launcher=slurm", *SMOKE, "seed=0", cwd=tmp_path, env_extra=ONE_THREAD
    )
    assert again.returncode == 0, again.stderr
    assert "Nothing to submit: 1 run(s) finished" in again.stdout + again.stderr
    assert not (tmp_path / "outputs" / ".submitit").exists()


def test_planning_leaves_a_folder_of_another_configuration_untouched(
    tmp_path, compose_cfg, one_thread
):
    listed = job_lines(ladarun(*DRY, "seed=0", cwd=tmp_path, env_extra=ONE_THREAD).stdout)
    run_dir = tmp_path / re.search(r"\s(outputs/\S+seed0)\s", listed[0]).group(1)
    # A run of another configuration already lives in the folder the job would use.
    run_from_config(compose_cfg([*SMOKE, "seed=0", "protocol.lr=0.01"]), run_dir)
    own = (run_dir / ".hydra" / "config.yaml").read_text()  # the earlier run wrote its own
    res = ladarun(*DRY, "seed=0", cwd=tmp_path, env_extra=ONE_THREAD)
    assert "differs in: protocol.lr" in res.stdout + res.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == own


# --- submitting -------------------------------------------------------------------------------
def fake_slurm(bin_dir: Path, sbatch_stderr: str) -> dict:
    """sbatch that refuses with ``sbatch_stderr``, and srun and squeue that exist; PATH for them."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho '{sbatch_stderr}' >&2\nexit 1\n")
    for name in ("srun", "squeue"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return {**ONE_THREAD, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_sbatch_refusal_is_one_line_naming_the_fix(tmp_path):
    env = fake_slurm(
        tmp_path / "bin", "sbatch: error: Invalid generic resource (gres) specification"
    )
    res = ladarun(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=1",
        *SMOKE,
        "seed=0,1",
        cwd=tmp_path,
        env_extra=env,
    )
    assert res.returncode == 2
    err = res.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("ladarun: error: sbatch refused 2 run(s) asking for cpus=1 gpus=1")
    assert "hydra.launcher.gpus_per_node=0" in err


@pytest.mark.parametrize(
    "said, fix",
    [
        ("sbatch: error: invalid partition specified: gpu", "hydra.launcher.partition"),
        (
            "sbatch: error: Batch job submission failed: Requested node configuration is not available",
            "hydra.launcher.cpus_per_task / mem_gb",
        ),
        (
            "sbatch: error: Batch job submission failed: Requested time limit is invalid "
            "(missing or exceeds some limit)",
            "hydra.launcher.timeout_min",
        ),
        ("sbatch: error: Batch job submission failed: Invalid account", "hydra.launcher.account"),
    ],
)
def test_each_refusal_names_its_launcher_key(said, fix):
    line = sbatch_refusal(f"{said}\n", 3, {"cpus_per_task": 4, "mem_gb": 32, "timeout_min": 60})
    assert "\n" not in line and fix in line and said.split("error: ")[-1] in line


def test_without_slurm_commands_the_launcher_stops_in_one_line(tmp_path):
    venv_only = {**ONE_THREAD, "PATH": str(Path(os.sys.executable).parent)}
    res = ladarun("-m", "hydra/launcher=slurm", *SMOKE, cwd=tmp_path, env_extra=venv_only)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "not on PATH" in res.stderr and "hydra.launcher.dry_run=true" in res.stderr


# --- waiting ----------------------------------------------------------------------------------
def waiting(tmp_path, compose_hydra, monkeypatch, queue):
    """The launcher's wait on one job (7_0, no result file) while squeue answers ``queue()``."""
    launcher = ladarun_submitit.SlurmLauncher(submitit_folder=str(tmp_path / ".submitit"))
    launcher.setup(hydra_context=None, task_function=None, config=compose_hydra(SMOKE))
    resources = {"cpus_per_task": 4, "mem_gb": 32, "gpus_per_node": 0, "timeout_min": 240}
    planned = PlannedJob(0, ["seed=0"], tmp_path / "run", resources)
    job = SimpleNamespace(
        job_id="7_0",
        paths=SimpleNamespace(result_pickle=tmp_path / "none.pkl", stderr=tmp_path / "7_0.err"),
    )
    monkeypatch.setattr(ladarun_submitit, "sacct_available", lambda _: "accounting is disabled")
    monkeypatch.setattr(ladarun_submitit, "squeue_states", lambda ids: queue())
    monkeypatch.setattr(ladarun_submitit, "END_GRACE_S", 0.0)
    monkeypatch.setattr(ladarun_submitit.time, "sleep", lambda s: None)
    return launcher._follow([(planned, job)])


def test_a_job_gone_without_result_or_accounting_is_one_failure_not_a_wait(
    tmp_path, compose_hydra, monkeypatch, caplog
):
    polls = []
    with caplog.at_level("WARNING"):
        out = waiting(tmp_path, compose_hydra, monkeypatch, lambda: polls.append(1) or {})
    assert polls == [1]  # one look at the queue: the job is gone
    ret = out[0]
    assert ret.status == JobStatus.FAILED and isinstance(ret._return_value, JobLostError)
    message = str(ret._return_value)
    assert "7_0" in message and "without a result" in message and "7_0.err" in message
    assert [r.message.count("sacct") for r in caplog.records] == [1]  # one warning


def test_a_job_the_partition_cannot_hold_is_one_warning_naming_the_keys(
    tmp_path, compose_hydra, monkeypatch, caplog
):
    answers = [{"7_0": ("PENDING", "PartitionConfig")}] * 3 + [{"7_0": ("CANCELLED", "None")}]
    with caplog.at_level("WARNING"):
        out = waiting(tmp_path, compose_hydra, monkeypatch, lambda: answers.pop(0))
    pending = [r.getMessage() for r in caplog.records if "PartitionConfig" in r.getMessage()]
    assert len(pending) == 1  # three polls, one warning
    assert "cpus=4 gpus=0 mem=32GB" in pending[0] and "hydra.launcher.cpus_per_task" in pending[0]
    assert "scancel 7" in pending[0]
    assert "ended (CANCELLED) without a result" in str(out[0]._return_value)


# --- the time limit ---------------------------------------------------------------------------
def test_time_limit_twice_at_the_same_iteration_stops_requeueing(tmp_path):
    at_limit: list[int] = []
    note_time_limit(at_limit, -1, 60)  # first limit, still in the initial training
    note_time_limit(at_limit, 3, 60)  # progress: requeue again
    with pytest.raises(
        TimeLimitError, match=r"twice at iteration 3: .*hydra\.launcher\.timeout_min"
    ):
        note_time_limit(at_limit, 3, 60)
    with pytest.raises(TimeLimitError, match="before its initial training finished"):
        note_time_limit([-1], -1, 1)


def test_submitits_rule_tells_a_time_limit_from_a_preemption():
    start = 1000.0
    assert not timed_out(start, 240, now=start + 60)  # preempted after a minute
    assert timed_out(start, 240, now=start + 0.81 * 240 * 60)
    assert timed_out(start, 5, now=start + 1)  # limits under 10 min: every signal is the limit


def test_checkpoint_requeues_until_the_limit_finds_no_progress(tmp_path):
    launcher = ladarun_submitit.SlurmLauncher(submitit_folder=str(tmp_path / ".submitit"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launcher.run_dirs = {0: (str(run_dir), 60.0)}
    launcher.job_num, launcher.started = 0, time.time() - 3600  # signalled at the time limit
    (run_dir / "metrics.csv").write_text("iteration,n_labeled\n0,8\n1,12\n")
    assert launcher.checkpoint("args") is not None  # requeued
    (run_dir / "metrics.csv").write_text("iteration,n_labeled\n0,8\n1,12\n2,16\n")
    assert launcher.checkpoint("args") is not None  # one more iteration: requeued again
    with pytest.raises(TimeLimitError, match="twice at iteration 2"):
        launcher.checkpoint("args")
    launcher.at_time_limit, launcher.started = [2], time.time()  # a preemption, not the limit
    assert launcher.checkpoint("args") is not None


# --- make test-slurm --------------------------------------------------------------------------
def test_make_test_slurm_skips_with_the_install_line_where_slurm_is_missing(monkeypatch, capsys):
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("test_slurm", REPO / "scripts" / "test_slurm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "find", lambda name: None if name == "slurmd" else f"/bin/{name}")
    assert script.main() == 0  # nothing started, nothing to fail
    out = capsys.readouterr().out
    assert "skipped: Slurm is not installed here (slurmd not found)" in out
    assert "apt-get install slurmctld slurmd slurm-client munge" in out
