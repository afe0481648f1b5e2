"""Planning a sweep: every job's config composed as Hydra composes it, fast; finished runs left out
before any worker starts; a progress bar on a terminal.

The planning time of experiment=table1's 270 jobs is measured by ``make bench``
(benchmarks/planning.py), not here.
"""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from helpers import LADARUN, SMOKE, ladarun
from hydra_plugins.ladarun_launcher.planning import JobConfigs
from ladarun.conf import CONF_DIR
from ladarun.runner import run_from_config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """(Hydra's config loader, the sweep's master config) for ``ladarun -m <overrides>``."""
    monkeypatch.chdir(tmp_path)
    opened = []

    def _sweep(*overrides):
        context = initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
        context.__enter__()
        opened.append(context)
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", list(overrides), RunMode.MULTIRUN)
        return loader, master

    yield _sweep
    for context in opened:
        context.__exit__(None, None, None)


def hydras(loader, master, overrides):
    """Hydra's own composition of one job: its run directory and resolved config."""
    cfg = loader.load_sweep_config(master, list(overrides))
    run_dir = os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    config = OmegaConf.to_container(task, resolve=True)
    return run_dir, config


JOBS = [
    ["experiment=table1", "method=ent_infomixup", "dataset=fashion", "seed=3"],
    ["experiment=table1", "method=ent_infomixup", "dataset=fashion", "seed=4"],
    ["experiment=table1", "method=var", "dataset=svhn", "seed=0"],
    ["experiment=table1", "method=ent_infomixup", "dataset=fashion"],  # seed back to its default
    ["protocol=smoke", "protocol.lr=0.01", "seed=1", "data_dir=/elsewhere"],
    ["protocol=smoke", "protocol.epochs=${protocol.iterations}", "seed=2"],  # an interpolation
    ["protocol=smoke", "+protocol.extra=1", "seed=2"],  # an addition: composed with the options
    ["protocol=smoke", "seed=2", "model.dropout=0.25"],
]


def test_each_job_composes_as_hydra_composes_it(sweep, tmp_path):
    loader, master = sweep()
    expected = [hydras(loader, master, job) for job in JOBS]
    for run_dir, _ in expected:  # the config is read only where the run directory exists
        (tmp_path / run_dir).mkdir(parents=True, exist_ok=True)
    configs = JobConfigs(loader, master)
    for job, (run_dir, config) in zip(JOBS, expected):
        facts = configs(job)
        assert (str(facts.run_dir), facts.config) == (run_dir, config), job
        assert facts.protocol == config["protocol"]["name"]
    # One Hydra composition per choice of options (an addition counts as one): table1's
    # (ent_infomixup, fashion) and (var, svhn), protocol=smoke with and without the addition;
    # the other jobs applied their values to those.
    assert sorted(configs.bases) == [
        ("experiment=table1", "method=ent_infomixup", "dataset=fashion"),
        ("experiment=table1", "method=var", "dataset=svhn"),
        ("protocol=smoke",),
        ("protocol=smoke", "+protocol.extra=1"),
    ]
    assert expected[0][0].endswith("fashion/ent-infomixup/seed3")
    assert expected[3][0].endswith("fashion/ent-infomixup/seed0")


def test_a_value_no_config_has_is_hydras_own_error(sweep):
    loader, master = sweep()
    with pytest.raises(ConfigCompositionException, match="Could not override 'protocol.lrr'"):
        JobConfigs(loader, master)(["protocol=smoke", "protocol.lrr=0.1"])


def test_a_run_directory_named_by_hydras_per_job_fields_is_composed_whole(sweep):
    loader, master = sweep("hydra.sweep.subdir=${hydra.job.override_dirname}")
    configs = JobConfigs(loader, master)
    assert configs.whole
    for job in (["protocol=smoke", "seed=1"], ["protocol=smoke", "seed=2"]):
        assert str(configs(job).run_dir) == hydras(loader, master, job)[0]
    assert str(configs(["protocol=smoke", "seed=2"]).run_dir).endswith("protocol=smoke,seed=2")


def test_local_launcher_leaves_finished_runs_out_before_any_worker(
    tmp_path, compose_cfg, one_thread
):
    for seed in (0, 1):
        run_dir = tmp_path / "outputs" / "synthetic" / "ent-none" / "protocol=smoke" / f"seed{seed}"
        run_from_config(compose_cfg([*SMOKE, f"seed={seed}"]), run_dir)
    res = ladarun(
        "-m", "hydra/launcher=local", *SMOKE, "seed=0,1", cwd=tmp_path, env_extra=ONE_THREAD
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Nothing to run: 2 run(s) finished, 0 left out" in out
    assert "Joblib.Parallel" not in out  # no worker was started


def test_planning_shows_its_progress_on_a_terminal(tmp_path):
    """tqdm's bar on the terminal's stderr (a pseudo-terminal here), none in a pipe."""
    leader, follower = pty.openpty()
    # A terminal of 30 x 100 characters: tqdm draws nothing on one of width 0.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [str(LADARUN), "-m", "hydra/launcher=slurm", "hydra.launcher.dry_run=true", *SMOKE]
        + ["seed=0,1,2"],
        cwd=tmp_path,
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        try:
            chunk = os.read(leader, 4096) if ready else b""
        except OSError:  # the terminal closed with the process
            chunk = b""
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0 and "3 would be submitted" in out
    text = seen.decode(errors="replace")
    assert re.search(r"composing: +\d+%.*/3 ", text) and re.search(r"planning: +\d+%", text), text
    piped = ladarun(
        "-m", "hydra/launcher=slurm", "hydra.launcher.dry_run=true", *SMOKE, cwd=tmp_path
    )
    assert "planning:" not in piped.stderr and "composing:" not in piped.stderr
