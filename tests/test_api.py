"""The Python API (ladarun.run, ladarun.load_runs), python -m ladarun and ladarun --version."""

import importlib.metadata
import json
import subprocess
import sys

import pandas as pd
import pytest
from hydra.core.hydra_config import HydraConfig

import ladarun
from helpers import SMOKE
from helpers import ladarun as ladarun_script
from ladarun.errors import ConfigError
from runs_factory import write_run


def test_import_is_light_and_the_api_loads_on_first_use():
    code = (
        "import sys, ladarun; assert 'torch' not in sys.modules and 'hydra' not in sys.modules; "
        "ladarun.run, ladarun.load_runs, ladarun.RunResult; assert 'torch' not in sys.modules; "
        "from ladarun import run; print(run.__module__)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ladarun.api"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ladarun.nothing  # noqa: B018


def test_run_lands_where_the_cli_does_and_returns_what_it_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [*SMOKE, "acquisition=random", "seed=3"]
    result = ladarun.run(overrides)
    assert (tmp_path / result.dir / "summary.json").is_file()
    assert result.dir.parts[:3] == ("outputs", "synthetic", "random-none")
    assert result.dir.name == "seed3"
    assert isinstance(result.metrics, pd.DataFrame)
    assert result.metrics["n_labeled"].tolist() == [8, 12, 16]
    summary = json.loads((result.dir / "summary.json").read_text())
    assert result.summary == summary
    assert result.best_acc == pytest.approx(result.metrics["test_acc"].max())
    assert result.config["acquisition"]["name"] == "random" and "hydra" not in result.config
    assert "best accuracy" in (result.dir / "ladarun.log").read_text()
    # the same command line finds the API's run finished: same folder, same config
    res = ladarun_script(*overrides, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "already finished" in res.stdout + res.stderr
    # and the API reads a finished run back instead of running it again
    mtime = (result.dir / "metrics.csv").stat().st_mtime_ns
    again = ladarun.run(overrides)
    assert (again.dir, again.best_acc) == (result.dir, result.best_acc)
    assert (result.dir / "metrics.csv").stat().st_mtime_ns == mtime


def test_run_honours_hydra_run_dir_and_refuses_sweeps(tmp_path, monkeypatch):
    before = HydraConfig.instance().cfg
    result = ladarun.run([*SMOKE, f"hydra.run.dir={tmp_path}/here"])
    assert result.dir == tmp_path / "here" and (tmp_path / "here" / "metrics.csv").is_file()
    assert HydraConfig.instance().cfg is before  # the caller's Hydra state is put back
    # refused before it runs: one ConfigError, and no folder left behind (as the CLI)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="protocol.query"):
        ladarun.run([*SMOKE, "augment=infomixup", "protocol.query=3"])
    assert not (tmp_path / "outputs").exists()
    with pytest.raises(ConfigError, match="experiment=table1_quick is a sweep preset.*add -m"):
        ladarun.run(["experiment=table1_quick"])
    with pytest.raises(
        ConfigError, match=r"Could not find 'dataset/imagenet'.*: cifar10 cifar100 digits fashion"
    ):
        ladarun.run(["dataset=imagenet"])


def test_load_runs_is_one_tidy_frame_of_config_and_metrics(tmp_path):
    write_run(tmp_path, acquisition="random", seed=0, accs=(50.0, 60.0, 70.0))
    write_run(tmp_path, acquisition="ent", augment="infomixup", seed=1, accs=(55.0, 65.0, 75.0))
    write_run(tmp_path, acquisition="ent", seed=2, accs=(40.0, 45.0), finished=False)
    broken = write_run(tmp_path, acquisition="var", seed=0)
    (broken / "metrics.csv").write_text("iteration,n_labeled\n0,")
    with pytest.warns(UserWarning, match="var-none/seed0 left out: metrics.csv"):
        frame = ladarun.load_runs(tmp_path)
    assert len(frame) == 3 + 3 + 2
    by_run = frame.groupby("run")
    assert by_run.size().to_dict() == {
        "quick/fashion/ent-infomixup/seed1": 3,
        "quick/fashion/ent-none/seed2": 2,
        "quick/fashion/random-none/seed0": 3,
    }
    lada = frame[frame["row"] == "ent_infomixup"]
    assert lada["label"].unique().tolist() == ["LADA_EntMix"]
    assert lada["test_acc"].tolist() == [55.0, 65.0, 75.0]
    assert set(lada["seed"]) == {1} and set(lada["protocol.iterations"]) == {2}
    assert frame.set_index("run")["status"].groupby(level=0).first().to_dict() == {
        "quick/fashion/ent-infomixup/seed1": "finished",
        "quick/fashion/ent-none/seed2": "incomplete",
        "quick/fashion/random-none/seed0": "finished",
    }
    # a tidy frame: the mean learning curve of each row is one groupby away
    curve = frame.groupby(["row", "n_labeled"])["test_acc"].mean()
    assert curve.loc[("random", 40)] == 70.0
    with pytest.raises(ConfigError, match="is not a folder"):
        ladarun.load_runs(tmp_path / "nowhere")


def test_python_m_ladarun_is_the_cli_and_version_is_ladarun_s(tmp_path):
    version = importlib.metadata.version("ladarun")
    res = ladarun_script("--version", cwd=tmp_path)
    assert (res.returncode, res.stdout.strip()) == (0, f"ladarun {version}")
    assert ladarun.__version__ == version
    res = subprocess.run(
        [sys.executable, "-m", "ladarun", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0 and "dataset: cifar10, cifar100, digits" in res.stdout


def test_a_sweep_preset_without_m_is_one_line_naming_the_fix(tmp_path):
    res = ladarun_script("experiment=table1_quick", "data_dir=/data", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ladarun: error: experiment=table1_quick is a sweep preset (it sweeps method, dataset, "
        "seed); add -m to run it: ladarun -m experiment=table1_quick data_dir=/data"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing was run or written
    shown = ladarun_script("--cfg", "job", "experiment=table1_quick", cwd=tmp_path)
    assert shown.returncode == 0 and "name: table1_quick" in shown.stdout
