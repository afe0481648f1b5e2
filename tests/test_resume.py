"""Checkpoint and resume: an interrupted run continues exactly where it stopped."""

import csv
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import (
    LADARUN,
    SMOKE,
    Crash,
    crash_at_evaluation,
    outcome,
    read_csv,
    toy_run,
)
from ladarun.errors import ConfigError
from ladarun.loop import RunOptions
from ladarun.rundir.checkpoint import Checkpoint
from ladarun.rundir.files import CHECKPOINT


def run(out_dir, **kw):
    return toy_run(
        out_dir, seed=5, iterations=4, epochs=2, options=RunOptions(progress=False, **kw)
    )


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)  # iteration 2 trains, then dies before its row and checkpoint
        with pytest.raises(Crash):
            run(tmp_path / "resumed", keep_checkpoint=True)
    partial = read_csv(tmp_path / "resumed" / "metrics.csv")
    assert [r["iteration"] for r in partial] == ["0", "1"]
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)["iteration"] == 1
    run(tmp_path / "resumed")
    straight = read_csv(tmp_path / "straight" / "metrics.csv")
    resumed = read_csv(tmp_path / "resumed" / "metrics.csv")
    assert outcome(resumed) == outcome(straight)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["resumed_at"] == [2]
    assert (
        summary["best_acc"]
        == json.loads((tmp_path / "straight" / "summary.json").read_text())["best_acc"]
    )
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()  # deleted once finished


def test_rows_past_the_checkpoint_are_dropped_not_duplicated(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 4)
        with pytest.raises(Crash):
            run(tmp_path)
    # A crash between writing a row and saving the checkpoint leaves a row the checkpoint lacks.
    rows = read_csv(tmp_path / "metrics.csv")
    with open(tmp_path / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow(
            {**rows[-1], "iteration": "3", "test_acc": "99"}
        )
    run(tmp_path)
    final = read_csv(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in final] == [0, 1, 2, 3, 4]
    assert final[3]["test_acc"] != "99"


def test_checkpoint_of_another_configuration_is_refused(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 2)
        with pytest.raises(Crash):
            run(tmp_path, fingerprint="aaaa")
    with pytest.raises(ConfigError, match="different configuration"):
        run(tmp_path, fingerprint="bbbb")
    run(tmp_path, fingerprint="aaaa")
    assert len(read_csv(tmp_path / "metrics.csv")) == 5


def test_checkpoint_false_writes_none(tmp_path, monkeypatch):
    seen = []
    real = Checkpoint.save
    monkeypatch.setattr(Checkpoint, "save", lambda *a: seen.append(a) or real(*a))
    run(tmp_path, checkpoint=False)
    assert not seen and not (tmp_path / CHECKPOINT).exists()


WALL_CLOCK = ("acquire_s", "train_s", "eval_s", "iter_s")
# The run folder of the killed run's non-default settings (rundir.identity.run_variant).
VARIANT = "protocol.epochs=2,protocol.iterations=40,+3-b34e795c"  # a long name ends in a hash


@pytest.mark.slow
def test_killed_console_script_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the real CLI mid-run (as a preempted job), rerun the same command: the
    metrics equal an uninterrupted run's of the same seed in every column but wall-clock time,
    queries.csv is the same file, and TensorBoard holds the same points, each once."""
    args = [
        str(LADARUN),
        "dataset=synthetic",
        "protocol=smoke",
        "protocol.iterations=40",
        "progress=false",
        "seed=1",
        "protocol.pool_subset=20",
        "protocol.query=4",
        "protocol.epochs=2",
        "logger=[csv,tensorboard]",
    ]
    # One thread each: the two runs share the CPU (and 2-core machines), and torch's threads
    # spin badly when oversubscribed.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LADARUN_DATA", None)
    (tmp_path / "killed").mkdir()
    (tmp_path / "straight").mkdir()
    run_dir = tmp_path / "killed" / "outputs" / "synthetic" / "ent-none" / VARIANT / "seed1"
    straight = subprocess.Popen(
        args,
        cwd=tmp_path / "straight",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        args, cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 1800  # only catches a hang: a busy machine may be slow
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.csv").exists() and len(read_csv(run_dir / "metrics.csv")) >= 3:
            break
        time.sleep(0.05)
    time.sleep(0.1)  # into the next iteration's training, which takes most of an iteration's time
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_csv(run_dir / "metrics.csv"))
    assert 3 <= done_before < 41 and (run_dir / CHECKPOINT).exists()
    res = subprocess.run(
        args, cwd=tmp_path / "killed", env=env, capture_output=True, text=True, timeout=1800
    )
    assert res.returncode == 0, res.stderr
    assert "Resuming" in res.stdout + res.stderr
    resumed = read_csv(run_dir / "metrics.csv")
    assert [int(r["iteration"]) for r in resumed] == list(range(41))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_at"] and summary["resumed_at"][0] >= 2
    assert straight.wait(timeout=1800) == 0, straight.stderr.read()
    reference = read_csv(
        tmp_path
        / "straight"
        / "outputs"
        / "synthetic"
        / "ent-none"
        / VARIANT
        / "seed1"
        / "metrics.csv"
    )
    assert list(resumed[0]) == list(reference[0])
    without_time = lambda rows: [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]
    assert without_time(resumed) == without_time(reference)
    assert len({r["test_acc"] for r in reference}) > 1  # the comparison has something to compare
    straight_dir = tmp_path / "straight" / "outputs" / "synthetic" / "ent-none" / VARIANT / "seed1"
    assert (run_dir / "queries.csv").read_text() == (straight_dir / "queries.csv").read_text()

    def points(folder):
        acc = EventAccumulator(str(folder / "tensorboard"))
        acc.Reload()
        return [(e.step, round(e.value, 4)) for e in acc.Scalars("test_acc")]

    assert points(run_dir) == points(straight_dir)
    assert [s for s, _ in points(run_dir)] == [int(r["n_labeled"]) for r in reference]


def test_unfinished_run_of_another_config_is_kept(compose_cfg, tmp_path, monkeypatch):
    from ladarun.runner import run_from_config

    with monkeypatch.context() as m:
        crash_at_evaluation(m, 2)
        with pytest.raises(Crash):
            run_from_config(compose_cfg(SMOKE), tmp_path)
    before = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(ConfigError, match=r"resumable .*differs in: protocol"):
        run_from_config(compose_cfg(SMOKE + ["protocol.epochs=2"]), tmp_path)
    assert (tmp_path / "metrics.csv").read_bytes() == before and (tmp_path / CHECKPOINT).exists()
    run_from_config(compose_cfg(SMOKE + ["progress=true"]), tmp_path)  # operational keys may change
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_at"] == [1]
