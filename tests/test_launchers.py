"""Sweeps through the launcher configs of conf/hydra/launcher/, with the console script in a subprocess."""

import json
from pathlib import Path

import pytest

from helpers import SMOKE, ladarun
from ladarun.cli import check_launcher
from ladarun.errors import ConfigError
from ladarun.rundir.files import FAILURE

# One torch thread per job: jobs run side by side, and oversubscribed threads spin.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def finished_seeds(root: Path) -> list[str]:
    return sorted(
        p.parent.name
        for p in root.glob("outputs/synthetic/ent-none/protocol=smoke/seed*/summary.json")
    )


@pytest.mark.slow
def test_two_job_sweep_through_joblib(tmp_path):
    res = ladarun(
        "-m", "hydra/launcher=local", *SMOKE, "seed=0,1", cwd=tmp_path, env_extra=ONE_THREAD
    )
    assert res.returncode == 0, res.stderr
    assert "Joblib.Parallel(n_jobs=2" in res.stdout + res.stderr  # the joblib launcher ran them
    assert finished_seeds(tmp_path) == ["seed0", "seed1"]


@pytest.mark.slow
def test_two_job_sweep_through_submitit_local(tmp_path):
    res = ladarun(
        "-m",
        "hydra/launcher=submitit_local",
        *SMOKE,
        "seed=0,1",
        cwd=tmp_path,
        env_extra=ONE_THREAD,
    )
    assert res.returncode == 0, res.stderr
    assert "Submitting 2 of 2 run(s)" in res.stdout + res.stderr  # ladarun's submitit launcher
    assert len(list((tmp_path / "outputs" / ".submitit").glob("*/*_result.pkl"))) == 2
    assert finished_seeds(tmp_path) == ["seed0", "seed1"]


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others(tmp_path):
    # synthetic's pool (192 points) cannot feed 2 x 100 queries, digits' can: job 0 fails, job 1 runs.
    res = ladarun(
        "-m",
        "dataset=synthetic,digits",
        "protocol=smoke",
        "protocol.query=100",
        "protocol.pool_subset=null",
        "progress=false",
        cwd=tmp_path,
        env_extra=ONE_THREAD,
    )
    assert res.returncode != 0  # the sweep reports the failure ...
    variant = "protocol.pool_subset=null,protocol.query=100,protocol=smoke"
    # One summary line per failed job, naming its folder and the fix; no traceback.
    assert "ladarun: 1 of 2 jobs failed:" in res.stderr
    assert "Traceback" not in res.stderr
    assert f"/{variant}/seed0: 2 iterations x query 100" in res.stderr
    assert "set protocol.iterations <= 1" in res.stderr
    assert (
        tmp_path / "outputs" / "digits" / "ent-none" / variant / "seed0" / "summary.json"
    ).exists()  # ... after job 1 ran
    failed = tmp_path / "outputs" / "synthetic" / "ent-none" / variant / "seed0"
    assert json.loads((failed / FAILURE).read_text())["error"] == "ConfigError"
    from ladarun.report.table import aggregate

    agg = aggregate(tmp_path / "outputs")
    assert [r.status for r in agg.not_finished] == ["failed"]
    assert agg.cells.loc[0, "dataset"] == "digits" and agg.cells.loc[0, "n"] == 1


def test_unknown_launcher_is_one_line_naming_the_options(tmp_path):
    res = ladarun("-m", "hydra/launcher=slrum", *SMOKE, cwd=tmp_path, env_extra=ONE_THREAD)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert (
        "unknown launcher 'slrum'" in res.stderr
        and "slurm" in res.stderr
        and "submitit_local" in res.stderr
    )


def test_misspelled_launcher_key_is_named(tmp_path):
    res = ladarun(
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.n_job=1",
        *SMOKE,
        cwd=tmp_path,
        env_extra=ONE_THREAD,
    )
    assert res.returncode != 0
    assert "hydra.launcher.n_job" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "outputs" / "synthetic").exists()


def test_missing_plugin_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("hydra_plugins") else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[slurm\]'"):
        check_launcher(["-m", "hydra/launcher=slurm"])
    with pytest.raises(
        ConfigError,
        match=r"hydra-joblib-launcher plugin; install it with pip install -e '\.\[parallel\]'",
    ):
        check_launcher(["hydra/launcher=local"])
    check_launcher(["hydra/launcher=basic", "seed=1"])  # Hydra's own launcher needs nothing


def test_slurm_launcher_settings_and_site_file(compose_hydra, tmp_path):
    launcher = compose_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.ladarun_launcher.ladarun_submitit.SlurmLauncher"
    # Resources come from each run's protocol (tests/test_slurm_launcher.py), not the top level.
    assert (launcher.gpus_per_node, launcher.max_num_timeout, launcher.partition) == (
        None,
        10,
        None,
    )
    assert launcher.resources.paper.gpus_per_node == 1 and launcher.dry_run is False
    assert launcher.max_num_timeout > 0  # a timed-out run is requeued (and resumes), not lost
    # Site values: from a site/slurm.yaml on Hydra's search path (conf/site/slurm.yaml is on it) ...
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "slurm.yaml").write_text(
        "partition: gpu_a100\naccount: lab\nsetup: ['module load cuda']\n"
    )
    site = compose_hydra(
        ["hydra/launcher=slurm", f"hydra.searchpath=[file://{tmp_path}]"]
    ).hydra.launcher
    assert (site.partition, site.account, list(site.setup), site.resources.paper.mem_gb) == (
        "gpu_a100",
        "lab",
        ["module load cuda"],
        32,
    )
    # ... and the command line wins over both.
    cli = compose_hydra(
        [
            "hydra/launcher=slurm",
            f"hydra.searchpath=[file://{tmp_path}]",
            "hydra.launcher.partition=debug",
        ]
    )
    assert cli.hydra.launcher.partition == "debug"
