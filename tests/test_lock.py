"""One process per run directory: an OS lock that a second process meets at once, that dies
with its owner, and that the table reads to tell a live run from a stopped one."""

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import SMOKE, read_csv
from ladarun.errors import RunLockedError
from ladarun.report.table import main as table_main
from ladarun.rundir.files import LOCK, atomic_write
from ladarun.rundir.lock import run_lock, running_owner
from ladarun.runner import run_from_config


def hold_lock(path):
    """A separate process that takes the run lock of ``path`` and keeps it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from ladarun.rundir.lock import run_lock
        with run_lock({str(path)!r}):
            print("locked", flush=True)
            time.sleep(3600)  # until the test kills it
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_a_live_run_stops_at_once_and_writes_nothing(compose_cfg, tmp_path):
    owner = hold_lock(tmp_path)
    try:
        assert running_owner(tmp_path).startswith(f"PID {owner.pid} on ")
        with pytest.raises(RunLockedError, match=rf"is being run right now by PID {owner.pid} on "):
            run_from_config(compose_cfg(SMOKE), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]
    finally:
        owner.kill()  # SIGKILL: the kernel releases the lock with the process
        owner.wait()
    assert running_owner(tmp_path) is None
    run_from_config(compose_cfg(SMOKE), tmp_path)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "metrics.csv")] == [0, 1, 2]


def test_the_lock_is_released_on_an_error_and_reentered_by_the_next_run(tmp_path):
    with pytest.raises(ValueError):
        with run_lock(tmp_path):
            assert running_owner(tmp_path).startswith(f"PID {os.getpid()} on ")
            raise ValueError
    with run_lock(tmp_path):
        pass


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    (tmp_path / "checkpoint.pt.12345.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "metrics.csv").write_text("iteration\n0\n")
    with run_lock(tmp_path):
        assert not list(tmp_path.glob("*.tmp"))
        assert (tmp_path / "metrics.csv").exists()


def test_an_atomic_write_uses_a_temporary_file_of_its_own_process(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr("os.replace", lambda a, b: seen.append(str(a)) or real_replace(a, b))
    with atomic_write(tmp_path / "summary.json") as f:
        f.write("{}")
    assert seen == [str(tmp_path / f"summary.json.{os.getpid()}.tmp")]


def test_the_table_tells_a_live_run_from_a_stopped_one(compose_cfg, tmp_path, capsys):
    run_dir = tmp_path / "synthetic" / "ent-none" / "seed0"
    run_from_config(compose_cfg(SMOKE + ["protocol.iterations=1"]), run_dir)
    (run_dir / "summary.json").unlink()  # as if stopped before its end
    owner = hold_lock(run_dir)
    try:
        table_main([str(tmp_path)])
        assert f"running now (PID {owner.pid} on " in capsys.readouterr().err
    finally:
        owner.kill()
        owner.wait()
    table_main([str(tmp_path)])
    assert "stopped: rerun the same command" in capsys.readouterr().err
