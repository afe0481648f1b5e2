"""Bad input and faults, as a new user meets them (issue 17's probe): each ends in one line that
names the key or file and the fix, never a traceback, and loses or orphans nothing.

Cases kept in other modules: damaged checkpoint/summary/run_config and Ctrl-C (test_damaged.py),
a second process on a live run and stale temporary files (test_lock.py), damaged dataset files
(test_data.py), SIGKILL and resume (test_resume.py), collisions between configurations
(test_run_dirs.py), unknown options and launchers (test_cli.py, test_launchers.py).
"""

from __future__ import annotations

import errno
import os

import pytest

from helpers import (
    CAN_MOUNT,
    LADARUN,
    SMOKE,
    in_mount_namespace,
    ladarun,
    read_csv,
    stopped_toy_run,
    toy_run,
)
from ladarun.errors import ConfigError, DamagedFileError, DiskFullError
from ladarun.runner import run_from_config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# --- settings refused before anything is written or trained ----------------------------------

# (overrides, what the one-line message must say)
BAD_SETTINGS = [
    (["seed=abc"], "seed must be an integer, got 'abc'; set seed=N"),
    (["seed=true"], "seed must be an integer, got True"),
    (["seed=1.5"], "seed must be an integer, got 1.5"),
    (["protocol.iterations=0"], "protocol.iterations must be a positive integer, got 0"),
    (["protocol.iterations=abc"], "protocol.iterations must be a positive integer, got 'abc'"),
    (["protocol.query=2.5"], "protocol.query must be a positive integer, got 2.5"),
    (["protocol.epochs=true"], "protocol.epochs must be a positive integer, got True"),
    (["protocol.batch_size=-4"], "protocol.batch_size must be a positive integer, got -4"),
    (["protocol.pool_subset=0"], "protocol.pool_subset must be a positive integer or null"),
    (["protocol.pool_subset=2"], "protocol.pool_subset=2 is smaller than protocol.query=4"),
    (["protocol.lr=abc"], "protocol.lr must be a number, got 'abc'"),
    (["protocol.lr=0"], "protocol.lr must be a finite number > 0, got 0"),
    (["protocol.lr=inf"], "protocol.lr must be a finite number > 0, got inf"),
    (["seed=-1"], "seed must be from 0 to 2**32 - 1"),
    (["protocol.reinit=maybe"], "protocol.reinit must be true or false"),
    (
        ["augment=infomixup", "protocol.query=5"],
        "protocol.query must be even, got 5; set protocol.query=6",
    ),
    (["augment=infomixup_fixed", "protocol.query=5"], "protocol.query must be even, got 5"),
    (["acquisition=coreset", "augment=infomixup"], "acquisition=coreset selects a batch"),
    (["device=tpu"], "device must be one of auto, cpu, cuda; got 'tpu'"),
    (
        ["dataset=fashion", "dataset.crop_padding=-1"],
        "dataset.crop_padding must be an integer >= 0",
    ),
    (["dataset=fashion", "dataset.std=0"], "std must be positive"),
    (["dataset=cifar10", "dataset.mean=[0.5,0.5]"], "mean needs 1 or 3 values"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=lambda x: str(x))
def test_a_bad_setting_is_refused_before_anything_is_written(
    compose_cfg, tmp_path, overrides, message
):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_from_config(compose_cfg(SMOKE + overrides), out)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()  # no folder, no lock, no checkpoint to block the corrected command


def test_a_bad_setting_on_the_command_line_is_one_line_and_leaves_no_folder(tmp_path):
    res = ladarun(
        *SMOKE, "augment=infomixup", "protocol.query=5", cwd=tmp_path, env_extra=ONE_THREAD
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ladarun: error: InfoMixup labels pairs: protocol.query must be even, got 5; set protocol.query=6"
    ]
    assert not (tmp_path / "outputs").exists()  # Hydra's .hydra/ and log were removed too


def test_a_sweep_lists_each_failed_job_on_one_line_and_runs_the_rest(tmp_path):
    res = ladarun(
        "-m",
        *SMOKE,
        "augment=none,infomixup",
        "protocol.query=5",
        cwd=tmp_path,
        env_extra=ONE_THREAD,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    summary = lines.index("ladarun: 1 of 2 jobs failed:")
    assert (
        "/synthetic/ent-infomixup/protocol.query=5,protocol=smoke/seed0: InfoMixup labels"
        in (lines[summary + 1])
    )
    done = tmp_path / "outputs" / "synthetic" / "ent-none" / "protocol.query=5,protocol=smoke"
    assert len(read_csv(done / "seed0" / "metrics.csv")) == 3
    assert not (tmp_path / "outputs" / "synthetic" / "ent-infomixup").exists()


# --- a damaged metrics.csv is named before a resume could drop finished iterations ------------


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda data: data.splitlines(keepends=True)[0], r"does not hold iterations 0\.\.1 whole"),
        (lambda data: data[: len(data) - 30], r"does not hold iterations 0\.\.1 whole"),
        (lambda data: b"\xff\xfe\x00 not text" * 4, r"cannot be read"),
    ],
    ids=["rows lost", "last row cut", "binary garbage"],
)
def test_a_damaged_metrics_file_is_named_before_the_resume(tmp_path, monkeypatch, damage, why):
    metrics = stopped_toy_run(tmp_path, monkeypatch)
    metrics.write_bytes(damage(metrics.read_bytes()))
    with pytest.raises(
        DamagedFileError, match=r"metrics\.csv " + why + r".*delete it and checkpoint\.pt"
    ):
        toy_run(tmp_path)
    # The fix it names works.
    metrics.unlink()
    (tmp_path / "checkpoint.pt").unlink()
    toy_run(tmp_path)
    assert [int(r["iteration"]) for r in read_csv(metrics)] == [0, 1, 2, 3]


# --- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_the_rerun_resumes(
    tmp_path, monkeypatch
):
    import ladarun.rundir.files as state

    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 9:  # part-way through the run: some iterations are finished
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(state.os, "fsync", fsync)
        with pytest.raises(DiskFullError) as err:
            toy_run(tmp_path, iterations=4)
    assert "no space left on the device writing" in str(err.value)
    assert "rerun the same command to resume" in str(err.value)
    assert not list(tmp_path.glob("*.tmp"))
    finished = len(read_csv(tmp_path / "metrics.csv"))
    assert finished >= 1
    toy_run(tmp_path, iterations=4)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "metrics.csv")] == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not CAN_MOUNT, reason="needs unshare -rm and a tmpfs mount (user namespaces)")
def test_a_real_full_disk_through_the_command_line(tmp_path):
    """A 1 MiB tmpfs (in a private mount namespace) holds the run folder: the first checkpoint
    does not fit. One line, exit 2, no temporary file; with room, the same command finishes."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    run = mnt / "run"
    command = f"{LADARUN} {' '.join(SMOKE)} hydra.run.dir={run}"
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99\n"
        f"{command} 2>err1; echo rc1=$?\n"
        f"ls -a {run}; cat err1\n"
        f"mount -o remount,size=256m {mnt}\n"
        f"{command} 2>err2; echo rc2=$?\n"
        f"ls -a {run}; cat err2\n"
        f"wc -l < {run}/metrics.csv\n"
    )
    res = in_mount_namespace(script, tmp_path)
    out = res.stdout
    assert "rc1=2" in out and "rc2=0" in out, out + res.stderr
    first, second = out.split("rc2=")
    assert "ladarun: error: no space left on the device writing" in first
    assert "Traceback" not in out and ".tmp" not in out
    # The header and iterations 0..2 after the rerun.
    assert second.strip().splitlines()[-1] == "4"
