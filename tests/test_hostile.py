"""Issue 35's second round of faults, hostile files and user mistakes, one test per case, so that
none can come back. Each reproduces the fault, then checks that it ends in one line naming the
fix, that nothing finished is lost, and that nothing outside the run folder is written.

The cases of the issue that live with their owners, by the issue's numbers:
 4, 10, 13  the report tools on damaged, wrong-shaped and mixed runs: test_aggregate.py
            (test_a_summary_of_the_wrong_shape_is_one_unusable_run, test_protocols_are_never_
            averaged_together, test_a_run_whose_loss_diverged_is_named_as_such...) and
            test_class_balance.py (test_protocols_are_reported_apart_and_a_seed_is_counted_once,
            test_a_crafted_checkpoint_is_never_unpickled, test_bad_report_options_are_one_line...);
 8, 12      a sweep's workers end with their parent, Ctrl-C on a sweep is one line per run:
            test_sweep_interrupts.py (slow), test_sweep_guards.py;
 12         a full disk at start or relaunch: test_faults.py (test_a_full_disk_is_one_line...,
            test_a_real_full_disk_through_the_command_line);
 at scale   planning 270 jobs, finished runs left out before any worker: test_sweep_planning.py;
 GPU audit  the findings a CPU can guard: test_gpu_path.py, test_sweep_guards.py and the two at
            the end of this module (docs/gpu.md has the table).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import (
    CAN_MOUNT,
    CPU,
    LADARUN,
    SMOKE,
    Crash,
    crash_at_evaluation,
    in_mount_namespace,
    ladarun,
    read_csv,
    tiny_protocol,
    toy_data,
    toy_run,
)
from ladarun.acquisition import MaxEntropy
from ladarun.data.base import ActiveDataset
from ladarun.errors import (
    ConfigError,
    DamagedFileError,
    DataMismatchError,
    FileAccessError,
)
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.rundir.checkpoint import Checkpoint, _steps_to_cpu, rng_state
from ladarun.rundir.files import CHECKPOINT, LOCK, METRICS, SUMMARY
from ladarun.runner import run_from_config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process that holds the run lock of ``path`` (a live run) until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from ladarun.rundir.lock import run_lock
        with run_lock({str(path)!r}):
            print("locked", flush=True)
            time.sleep(3600)  # until the test kills it
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


# --- 1. a launch refused by a live run's lock changes none of its files ----------------------


def test_a_launch_refused_by_the_lock_leaves_every_file_of_the_live_run_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    first = ladarun(*SMOKE, f"hydra.run.dir={run_dir}", cwd=tmp_path, env_extra=ONE_THREAD)
    assert first.returncode == 0, first.stderr
    assert (run_dir / ".hydra" / "config.yaml").exists()  # the run writes its own config
    owner = hold_lock(run_dir)
    before = files_of(run_dir)  # the live run's files (its lock names its owner)
    try:
        res = ladarun(
            *SMOKE,
            "protocol.epochs=7",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
            env_extra=ONE_THREAD,
        )
    finally:
        owner.kill()
        owner.wait()
    assert res.returncode == 2
    assert "is being run right now by PID" in res.stderr and "Traceback" not in res.stderr
    after = files_of(run_dir)
    assert after == before  # .hydra/config.yaml still says epochs of the run that made it


# --- 2. the files of a resume must agree with its checkpoint ----------------------------------


def test_a_resume_refuses_when_metrics_csv_is_gone_and_the_checkpoint_is_not(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            toy_run(tmp_path)
    kept = (tmp_path / METRICS).read_bytes()
    (tmp_path / METRICS).unlink()
    with pytest.raises(
        DamagedFileError,
        match=r"metrics.csv is missing, but checkpoint.pt has finished iterations 0\.\.1; put back",
    ):
        toy_run(tmp_path)
    assert not (tmp_path / SUMMARY).exists()
    (tmp_path / METRICS).write_bytes(kept)  # the fix it names
    toy_run(tmp_path)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / METRICS)] == [0, 1, 2, 3]


# --- 3. a resume on other data is refused -----------------------------------------------------


def test_a_resume_on_the_same_data_in_another_order_is_refused(tmp_path, monkeypatch):
    data = toy_data()
    order = torch.randperm(data.y_train.numel(), generator=torch.Generator().manual_seed(1))
    shuffled = ActiveDataset(
        "toy", data.x_train[order], data.y_train[order], data.x_test, data.y_test, data.num_classes
    )
    assert (
        shuffled.fingerprint() != data.fingerprint()
        and data.fingerprint() == toy_data().fingerprint()
    )

    def run(dataset):
        experiment = Experiment(dataset, cnn, MaxEntropy(), tiny_protocol(), seed=0)
        return run_active_learning(experiment, tmp_path, CPU, RunOptions(progress=False))

    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            run(data)
    with pytest.raises(DataMismatchError, match="not the data this run started on"):
        run(shuffled)
    run(data)  # on its own data it resumes
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["resumed_at"] == [2] and summary["data_fingerprint"] == data.fingerprint()


# --- 4. a diverging run stops with one line and is marked failed ------------------------------


def test_a_diverging_run_stops_with_one_line_naming_the_learning_rate(tmp_path):
    res = ladarun(
        *SMOKE, "protocol.lr=1e6", "hydra.run.dir=run", cwd=tmp_path, env_extra=ONE_THREAD
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("ladarun: error: training diverged at iteration ")
    assert "lower protocol.lr (now 1e+06" in line
    assert (tmp_path / "run" / "failed.json").exists() and not (tmp_path / "run" / SUMMARY).exists()
    rows = read_csv(tmp_path / "run" / METRICS)
    assert all(r["train_loss"] not in ("nan", "inf") for r in rows)  # no diverged row recorded


def test_an_infinite_learning_rate_is_refused_before_anything_is_written(tmp_path):
    res = ladarun(*SMOKE, "protocol.lr=inf", cwd=tmp_path, env_extra=ONE_THREAD)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ladarun: error: protocol.lr must be a finite number > 0, got inf; set e.g. protocol.lr=0.001"
    ]
    assert not (tmp_path / "outputs").exists()


# --- 5. symbolic links in a run folder are refused, never written through --------------------


@pytest.mark.parametrize("name", [LOCK, ".hydra/config.yaml", METRICS, "ladarun.log"])
def test_a_run_file_that_links_outside_is_refused_and_the_target_is_untouched(tmp_path, name):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    run_dir = tmp_path / "run"
    (run_dir / name).parent.mkdir(parents=True)
    (run_dir / name).symlink_to(outside)
    res = ladarun(*SMOKE, f"hydra.run.dir={run_dir}", cwd=tmp_path, env_extra=ONE_THREAD)
    assert res.returncode == 2, res.stderr
    assert f"{run_dir / name} is a symbolic link" in res.stderr.strip().splitlines()[-1]
    assert outside.read_text() == "keep me\n"


# --- 6. a crafted checkpoint cannot run code ---------------------------------------------------


class _Exploit:
    """Unpickling this runs a shell command (what a crafted checkpoint.pt could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / CHECKPOINT, "wb") as f:
        pickle.dump({"iteration": 0, "payload": _Exploit(marker)}, f)
    with pytest.raises(DamagedFileError, match="cannot be resumed from"):
        Checkpoint(tmp_path / CHECKPOINT).load(CPU)
    assert not marker.exists()


def test_a_checkpoint_of_ladarun_before_0_4_with_numpy_rng_state_still_loads(tmp_path, monkeypatch):
    """0.3 saved NumPy's RNG state as an array: the safe reader allows NumPy arrays, so an
    unfinished run of 0.3 resumes."""
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            toy_run(tmp_path, options=RunOptions(progress=False, keep_checkpoint=True))
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    name, keys, *rest = state["rng"]["numpy"]
    state["rng"]["numpy"] = (name, keys.numpy(), *rest)  # as 0.3 wrote it
    torch.save(state, tmp_path / CHECKPOINT)
    toy_run(tmp_path)
    assert json.loads((tmp_path / SUMMARY).read_text())["resumed_at"] == [2]


# --- 7. names that would climb out of the outputs folder --------------------------------------


@pytest.mark.parametrize("key", ["dataset.name", "acquisition.name", "augment.name"])
def test_a_name_that_climbs_out_of_the_outputs_folder_is_one_line(tmp_path, key):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    res = ladarun(*SMOKE, f"{key}=../../../escaped", cwd=work, env_extra=ONE_THREAD)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"ladarun: error: {key}='../../../escaped' cannot name a run folder (it would leave the "
        "outputs folder or hide it); use letters, digits and _ . + = , @ - only, starting with a "
        "letter or digit"
    ]
    assert list(tmp_path.rglob("escaped")) == [] and list(work.iterdir()) == []


def test_a_user_config_with_such_a_name_writes_nothing_either(compose_hydra, tmp_path):
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    cfg = compose_hydra([*SMOKE, "dataset.name=../x"])
    with pytest.raises(InterpolationResolutionError, match="cannot name a run folder"):
        OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True)


# --- 9. a run moved with its MLflow store never writes to the old place -----------------------


def test_a_moved_mlflow_run_does_not_write_artifacts_to_its_old_place(
    tmp_path, monkeypatch, caplog
):
    """The sweep folder (runs and MLflow store) is moved while a run is unfinished: the store
    still names the old artifact folder, which must not be written (or recreated)."""
    from ladarun.rundir.trackers import MLflowLogger

    old, new = tmp_path / "old", tmp_path / "new"

    def run(root):
        options = RunOptions(
            progress=False, loggers=[MLflowLogger()], log_root=root, experiment="toy"
        )
        return toy_run(root / "run", options=options)

    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            run(old)
    shutil.move(old, new)
    with caplog.at_level("WARNING"):
        run(new)
    assert not old.exists()  # nothing written to (or recreated at) the old place
    assert (new / "run" / SUMMARY).exists()
    assert "artifacts are not logged there" in caplog.text


# --- 10. a summary.json of the wrong shape is named, not taken for another config -------------


@pytest.mark.parametrize("text", ["{}", "[]", '{"run": []}'])
def test_a_summary_of_the_wrong_shape_is_named_with_the_fix(compose_cfg, tmp_path, text):
    run_from_config(compose_cfg(SMOKE), tmp_path)
    (tmp_path / SUMMARY).write_text(text)
    with pytest.raises(
        DamagedFileError, match=r"summary.json (holds no run config|does not hold a JSON object)"
    ):
        run_from_config(compose_cfg(SMOKE), tmp_path)


# --- 11. a CPU run resumes only on the thread count it started with ---------------------------


def test_a_resume_on_another_thread_count_is_refused(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with monkeypatch.context() as m:
            crash_at_evaluation(m, 3)
            with pytest.raises(Crash):
                toy_run(tmp_path)
        torch.set_num_threads(2)
        with pytest.raises(
            ConfigError, match="started on 1 CPU threads and would resume on 2.*OMP_NUM_THREADS=1"
        ):
            toy_run(tmp_path)
        torch.set_num_threads(1)
        toy_run(tmp_path)
    finally:
        torch.set_num_threads(before)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / METRICS)] == [0, 1, 2, 3]


# --- 12. the remaining tracebacks, each one line ----------------------------------------------


def test_an_unset_environment_variable_is_one_line(tmp_path):
    res = ladarun(*SMOKE, "data_dir=${oc.env:LADARUN_NOT_SET_ANYWHERE}", cwd=tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert (
        line.startswith("ladarun: error: the config does not resolve")
        and "LADARUN_NOT_SET_ANYWHERE" in line
    )
    assert not (tmp_path / "outputs").exists()


def test_a_negative_seed_is_one_line(tmp_path):
    res = ladarun(*SMOKE, "seed=-1", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ladarun: error: seed must be from 0 to 2**32 - 1 (NumPy's range), got -1; set e.g. seed=0"
    ]


def test_data_that_cannot_be_read_is_one_line(compose_cfg, tmp_path, monkeypatch):
    from ladarun.data.synthetic import SyntheticSource

    def unreadable(self, data_dir, device):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "data" / "x.bin"))

    monkeypatch.setattr(SyntheticSource, "load", unreadable)
    with pytest.raises(
        FileAccessError, match=r"x.bin: Permission denied; make it \(and its folder\) readable"
    ):
        run_from_config(compose_cfg(SMOKE), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "failed.json").read_text())["error"] == "PermissionError"


@pytest.mark.skipif(not CAN_MOUNT, reason="needs unshare -rm and a tmpfs mount (user namespaces)")
def test_read_only_working_and_run_folders_are_one_line(tmp_path):
    """A read-only file system (root cannot write it either): the working folder, where outputs/
    would go, and a finished run's folder rerun there. One line each, exit 2, nothing written."""
    work, run = tmp_path / "work", tmp_path / "work" / "run"
    run.mkdir(parents=True)
    command = f"{LADARUN} {' '.join(SMOKE)}"
    script = (
        f"cd {work} && {command} hydra.run.dir={run} > /dev/null 2>&1 || exit 99\n"
        f"mount --bind -o ro {work} {work} || exit 98\n"
        f"cd {work} && {command} seed=1 2>{tmp_path}/err1; echo rc1=$?; cat {tmp_path}/err1\n"
        f"{command} seed=2 hydra.run.dir={run}/sub 2>{tmp_path}/err2; echo rc2=$?; cat {tmp_path}/err2\n"
    )
    res = in_mount_namespace(script, tmp_path)
    out = res.stdout
    assert "rc1=2" in out and "rc2=2" in out, out + res.stderr
    assert "Traceback" not in out
    assert f"ladarun: error: {work} is not writable, so outputs cannot be created there" in out
    assert f"{run} is not writable, so {run}/sub cannot be created there" in out


# --- GPU audit #1 and #11 (the others: test_runtime.py) ----------------------------------------


def test_every_optimizer_step_counter_is_moved_back_to_the_cpu():
    moved = []

    class Marked(torch.Tensor):
        def cpu(self, *args, **kwargs):
            moved.append(True)
            return super().cpu(*args, **kwargs)

    step = lambda: torch.tensor(3.0).as_subclass(Marked)
    state = {
        "optimizer": {"state": {0: {"step": step(), "exp_avg": torch.zeros(2)}}},
        "augment": {"adam_state": [{"step": step()}]},
    }
    _steps_to_cpu(state)
    assert len(moved) == 2


def test_a_cpu_run_never_reads_the_cuda_random_streams(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def refuse():
        raise AssertionError("a CPU run initialised CUDA")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    assert rng_state(torch.Generator(), CPU)["cuda"] == []
