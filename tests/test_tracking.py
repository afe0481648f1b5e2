"""The logger group: TensorBoard event files and MLflow runs, read back with those libraries'
own readers (EventAccumulator, MlflowClient, mlflow.search_runs); the per-iteration log line;
progress bars inside long phases."""

from __future__ import annotations

import json
import logging
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tqdm.auto import tqdm

from helpers import SMOKE, Crash, ladarun, read_csv, toy_run
from ladarun.errors import ConfigError
from ladarun.loop import RunOptions
from ladarun.progress import bars, phase
from ladarun.report.runs import find_run_dirs
from ladarun.rundir.trackers import MLFLOW_DB, MLFLOW_RUN, MLflowLogger, TensorBoardLogger

CONFIG = {"seed": 5, "protocol": {"iterations": 4, "name": "tiny"}}


def run(out_dir, root, loggers=None, **kw):
    return toy_run(
        out_dir,
        seed=5,
        iterations=4,
        epochs=2,
        options=RunOptions(
            progress=False,
            run_info={"config": CONFIG},
            loggers=loggers if loggers is not None else [TensorBoardLogger(), MLflowLogger()],
            log_root=root,
            experiment="toy",
            **kw,
        ),
    )


def tensorboard_scalars(run_dir, tag):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def metrics_points(run_dir, column):
    return [(int(r["n_labeled"]), float(r[column])) for r in read_csv(run_dir / "metrics.csv")]


def test_logger_group_selects_several(compose_cfg):
    assert list(compose_cfg(SMOKE).logger) == ["csv"]  # the default
    cfg = compose_cfg(SMOKE + ["logger=[csv,tensorboard,mlflow]"])
    assert list(cfg.logger) == ["csv", "tensorboard", "mlflow"]
    assert cfg.logger.mlflow._target_ == "ladarun.rundir.trackers.MLflowLogger"


def test_every_point_once_after_a_kill_between_checkpoint_and_logging(tmp_path, monkeypatch):
    """Killed after iteration 1's checkpoint, before MLflow logged it: the resumed run's
    TensorBoard and MLflow hold every metrics.csv point exactly once, in one MLflow run."""
    root = tmp_path / "sweep"
    straight = root / "straight"
    run(straight, root)
    resumed = root / "resumed"
    real, calls = MLflowLogger.log, {"n": 0}

    def log(self, row):
        calls["n"] += 1
        if calls["n"] == 2:  # iteration 1: TensorBoard has it, MLflow has not
            raise Crash()
        return real(self, row)

    with monkeypatch.context() as m:
        m.setattr(MLflowLogger, "log", log)
        with pytest.raises(Crash):
            run(resumed, root)
    run_id = (resumed / MLFLOW_RUN).read_text()
    run(resumed, root)
    assert (resumed / MLFLOW_RUN).read_text() == run_id  # the same MLflow run, reused

    client = MlflowClient(tracking_uri=f"sqlite:///{root / MLFLOW_DB}")
    mlflow.set_tracking_uri(f"sqlite:///{root / MLFLOW_DB}")
    runs = mlflow.search_runs(experiment_names=["toy"])
    assert sorted(runs["tags.mlflow.runName"]) == ["resumed", "straight"]  # one experiment
    assert set(runs["status"]) == {"FINISHED"}
    assert set(runs["params.protocol.iterations"]) == {"4"}  # the config, flattened
    code = json.loads((root / "straight" / "summary.json").read_text())["code"]
    assert set(runs["params.code.commit"]) == {str(code["commit"])}  # the code it ran
    assert set(runs["params.code.dirty"]) == {str(code["dirty"])}
    by_name = dict(zip(runs["tags.mlflow.runName"], runs["run_id"]))
    for name in ("straight", "resumed"):
        run_dir = root / name
        for column in ("test_acc", "best_acc", "train_loss", "iter_s"):
            expected = metrics_points(run_dir, column)
            assert [s for s, _ in expected] == [6, 11, 16, 21, 26]
            history = client.get_metric_history(by_name[name], column)
            got = sorted((m.step, m.value) for m in history)
            assert [s for s, _ in got] == [s for s, _ in expected]  # each step once
            assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-5)
            tb = tensorboard_scalars(run_dir, column)
            assert [s for s, _ in tb] == [s for s, _ in expected]
            assert [v for _, v in tb] == pytest.approx([v for _, v in expected], rel=1e-5)
        artifacts = {a.path for a in client.list_artifacts(by_name[name])}
        assert {"summary.json", "metrics.csv", "queries.csv", "learning_curve.png"} <= artifacts
    # the same results, so the same points
    assert tensorboard_scalars(resumed, "test_acc") == tensorboard_scalars(straight, "test_acc")
    # the store's copies of summary.json and metrics.csv are not taken for runs by the reports
    assert find_run_dirs(root) == [resumed, straight]


def test_a_failed_run_is_marked_failed(tmp_path, monkeypatch):
    import ladarun.loop as loop_module

    def evaluate(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(loop_module, "evaluate", evaluate)
    with pytest.raises(Crash):
        run(tmp_path / "run", tmp_path, loggers=[MLflowLogger()])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / MLFLOW_DB}")
    assert list(mlflow.search_runs(experiment_names=["toy"])["status"]) == ["FAILED"]


@pytest.mark.parametrize(
    "logger, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")]
)
def test_missing_package_is_one_line_naming_the_extra(
    compose_cfg, tmp_path, monkeypatch, logger, module
):
    from ladarun.runner import run_from_config

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install -e '\.\[{logger}\]'"):
        run_from_config(compose_cfg(SMOKE + [f"logger=[csv,{logger}]"]), tmp_path / "run")
    assert not (tmp_path / "run" / "run_config.json").exists()  # refused before anything ran


def test_one_log_line_per_iteration(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ladarun.loop"):
        run(tmp_path, tmp_path, loggers=[])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert len(lines) == 5
    assert lines[0].startswith("iteration 0/4: 6 labels, test accuracy ")
    assert lines[-1].startswith("iteration 4/4: 26 labels, test accuracy ")
    assert all(", best " in line and line.endswith(" s") for line in lines)


def test_phase_bars_follow_the_progress_option():
    steps = range(3)
    assert phase(steps, "x") is steps  # off outside a run
    with bars(True):
        bar = phase(steps, "x")
        assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
        with bars(False):
            assert phase(steps, "x") is steps
    assert phase(steps, "x") is steps


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment(tmp_path):
    """ladarun -m with logger=[csv,tensorboard,mlflow]: one MLflow experiment named after the
    sweep folder, one finished run per job, a SQLite store in the sweep folder."""
    result = ladarun(
        "-m",
        *SMOKE,
        "logger=[csv,tensorboard,mlflow]",
        "acquisition=random,ent",
        "hydra.sweep.dir=mysweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mysweep' / MLFLOW_DB}")
    runs = mlflow.search_runs(experiment_names=["mysweep"])
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["params.acquisition.name"]) == ["ent", "random"]
    for name in runs["tags.mlflow.runName"]:
        assert tensorboard_scalars(tmp_path / "mysweep" / name, "test_acc")
