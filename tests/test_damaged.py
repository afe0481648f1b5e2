"""Damaged run files and interruptions end in one line that names the file and the fix, never
in a traceback, and the fix works (issue 17, item 3)."""

import os
import signal
import subprocess
import time

import pytest

from helpers import (
    LADARUN,
    SMOKE,
    Crash,
    crash_at_evaluation,
    read_csv,
    sigint_as_a_terminal_gives_it,
    stopped_toy_run,
    toy_run,
)
from ladarun.errors import ConfigError, DamagedFileError
from ladarun.runner import run_from_config


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_checkpoint"])
def test_a_damaged_checkpoint_is_named_with_the_fix(tmp_path, monkeypatch, damage):
    stopped_toy_run(tmp_path, monkeypatch)
    ckpt = tmp_path / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        import torch

        torch.save({"weights": torch.zeros(3)}, ckpt)
    with pytest.raises(DamagedFileError, match=r"checkpoint\.pt .*delete it to run this") as err:
        toy_run(tmp_path)
    assert "\n" not in str(err.value)
    ckpt.unlink()  # the fix the message names
    toy_run(tmp_path)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "metrics.csv")] == [0, 1, 2, 3]


def test_a_damaged_summary_is_named_with_the_fix(compose_cfg, tmp_path):
    run_from_config(compose_cfg(SMOKE), tmp_path)
    (tmp_path / "summary.json").write_text('{"best_acc": 71.')
    with pytest.raises(DamagedFileError, match=r"summary\.json is damaged .*delete it") as err:
        run_from_config(compose_cfg(SMOKE), tmp_path)
    assert "\n" not in str(err.value)


def test_a_damaged_run_config_beside_a_checkpoint_is_named_and_the_run_resumes_without_it(
    compose_cfg, tmp_path, monkeypatch
):
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 2)
        with pytest.raises(Crash):
            run_from_config(compose_cfg(SMOKE), tmp_path)
    (tmp_path / "run_config.json").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DamagedFileError, match=r"run_config\.json is damaged .*delete it"):
        run_from_config(compose_cfg(SMOKE), tmp_path)
    (tmp_path / "run_config.json").unlink()
    run_from_config(compose_cfg(SMOKE), tmp_path)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "metrics.csv")] == [0, 1, 2]


def test_ctrl_c_ends_in_one_line_saying_how_to_resume(tmp_path):
    # 200 epochs an iteration (seconds each, however busy the machine): Ctrl-C lands mid-run.
    args = [str(LADARUN), *SMOKE, "protocol.iterations=40", "protocol.epochs=200"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LADARUN_DATA", None)
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    metrics = (
        tmp_path
        / "outputs"
        / "synthetic"
        / "ent-none"
        / "protocol.epochs=200,protocol.iterations=40,protocol=smoke"
        / "seed0"
        / "metrics.csv"
    )
    deadline = time.time() + 1800  # only catches a hang: a busy machine may be slow
    while time.time() < deadline and not (metrics.exists() and len(read_csv(metrics)) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=1800)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ladarun: interrupted;") and "rerun the same command to resume" in last


def test_an_odd_query_for_a_pair_method_is_refused_before_training(compose_cfg, tmp_path):
    odd = SMOKE + ["method=ent_infomixup", "protocol.query=3"]
    with pytest.raises(
        ConfigError, match=r"protocol.query must be even, got 3; set protocol.query=4"
    ):
        run_from_config(compose_cfg(odd), tmp_path)
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "checkpoint.pt").exists()
    run_from_config(compose_cfg(SMOKE + ["method=ent_infomixup", "protocol.query=4"]), tmp_path)
    assert [int(r["n_labeled"]) for r in read_csv(tmp_path / "metrics.csv")] == [8, 12, 16]


def test_a_seed_that_is_not_an_integer_is_named(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"^seed must be an integer, got 'abc'; set seed=N"):
        run_from_config(compose_cfg(SMOKE + ["seed=abc"]), tmp_path)
