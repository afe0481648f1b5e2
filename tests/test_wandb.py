"""logger=wandb in offline mode (no account, no network): the run's offline files read back
record by record (W&B's transaction log: LevelDB log blocks of protobuf Records), every point
once after a kill, the config, the summary and the files, and a failed run marked failed."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

from helpers import SMOKE, Crash, crash_on_call, read_csv
from ladarun.rundir.trackers import WANDB_DIR, WANDB_RUN, WandbLogger
from test_tracking import run as tracked_run

BLOCK = 32768  # LevelDB log block; each record: crc32c (4), length (2), type (1), data


def records(path: Path):
    """The protobuf Records of a ``run-<id>.wandb`` file (after its 7-byte ':W&B' header)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer or zero padding
            pos += left
            continue
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def offline_runs(root: Path, run_id: str) -> list[list]:
    """The records of every process that logged to W&B run ``run_id``, in start order, once each
    ends with its exit record (W&B's service process may still be writing when finish returns)."""
    files = sorted((root / WANDB_DIR / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    deadline = time.monotonic() + 120  # only a hang reaches it
    while True:
        try:
            runs = [list(records(f)) for f in files]
        except DecodeError:  # a record half written
            runs = [[]]
        if all(r and r[-1].WhichOneof("record_type") == "exit" for r in runs):
            return runs
        assert time.monotonic() < deadline, "W&B never wrote the exit records"
        time.sleep(0.2)


def history(runs: list[list]) -> list[dict]:
    rows = []
    for recs in runs:
        for r in recs:
            if r.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        i.key or ".".join(i.nested_key): json.loads(i.value_json)
                        for i in r.history.item
                    }
                )
    return rows


def run(out_dir, root):
    return tracked_run(out_dir, root, loggers=[WandbLogger()])


def test_every_point_once_after_a_kill_between_checkpoint_and_logging(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "sweep"
    resumed = root / "resumed"
    with monkeypatch.context() as m:
        crash_on_call(m, WandbLogger, "log", 2)  # iteration 1 is checkpointed, not logged to W&B
        with pytest.raises(Crash):
            run(resumed, root)
    first = json.loads((resumed / WANDB_RUN).read_text())
    assert first["logged"] == [6]
    run(resumed, root)
    ledger = json.loads((resumed / WANDB_RUN).read_text())
    assert ledger["id"] == first["id"] and ledger["project"] == "toy"  # the same W&B run
    runs = offline_runs(root, ledger["id"])
    assert len(runs) == 2  # two processes, one W&B run
    points = history(runs)
    expected = read_csv(resumed / "metrics.csv")
    assert [p["_step"] for p in points] == [int(r["n_labeled"]) for r in expected]  # each once
    for point, row in zip(points, expected):
        for column in ("test_acc", "best_acc", "train_loss", "iter_s"):
            assert point[column] == pytest.approx(float(row[column]), rel=1e-5)
        assert "val_acc" not in point and "iteration" not in point  # empty cells, the step's index
    kinds = [r.WhichOneof("record_type") for r in runs[1]]
    assert "exit" in kinds
    config = next(r.run.config for r in runs[0] if r.WhichOneof("record_type") == "run")
    values = {u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in config.update}
    assert values["protocol"] == {"iterations": 4, "name": "tiny"} and "code" in values
    summaries = {}
    for r in runs[1]:
        if r.WhichOneof("record_type") == "summary":
            summaries.update(
                {
                    u.key or ".".join(u.nested_key): json.loads(u.value_json)
                    for u in r.summary.update
                }
            )
    summary = json.loads((resumed / "summary.json").read_text())
    assert summaries["best_acc"] == summary["best_acc"]
    assert summaries["ladarun_status"] == "FINISHED"
    exit_record = next(r.exit for r in runs[1] if r.WhichOneof("record_type") == "exit")
    assert exit_record.exit_code == 0
    saved = sorted((root / WANDB_DIR / "wandb").glob(f"offline-run-*-{ledger['id']}/files/*"))
    names = {p.name for p in saved}
    assert {"summary.json", "metrics.csv", "queries.csv", "learning_curve.png"} <= names


def test_a_failed_run_is_marked_failed(tmp_path, monkeypatch) -> None:
    import ladarun.loop as loop_module

    monkeypatch.setenv("WANDB_MODE", "offline")

    def evaluate(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(loop_module, "evaluate", evaluate)
    with pytest.raises(Crash):
        run(tmp_path / "run", tmp_path)
    ledger = json.loads((tmp_path / "run" / WANDB_RUN).read_text())
    (recs,) = offline_runs(tmp_path, ledger["id"])
    exit_record = next(r.exit for r in recs if r.WhichOneof("record_type") == "exit")
    assert exit_record.exit_code == 1


def test_logger_wandb_from_the_command_line_group(compose_cfg) -> None:
    cfg = compose_cfg([*SMOKE, "logger=[csv,wandb]"])
    assert list(cfg.logger) == ["csv", "wandb"]
    assert cfg.logger.wandb._target_ == "ladarun.rundir.trackers.WandbLogger"
