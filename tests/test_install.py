"""ladarun works as an installed package, not only from this checkout: its configs ship inside
the wheel (``pkg://ladarun.conf``), and the console script runs from any directory."""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module

REPO = Path(__file__).resolve().parents[1]


def test_the_configs_compose_as_a_package():
    with initialize_config_module(config_module="ladarun.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=ent_infomixup", "protocol=paper"])
    assert (cfg.acquisition.name, cfg.augment.name, cfg.protocol.iterations) == (
        "ent",
        "infomixup",
        100,
    )


def test_another_hydra_app_composes_ladarun_groups_through_its_searchpath(tmp_path):
    (tmp_path / "app.yaml").write_text(
        "defaults:\n  - dataset: fashion\n  - model: cnn\n  - protocol: quick\n  - _self_\n"
        "hydra:\n  searchpath:\n    - pkg://ladarun.conf\n"
        "my_setting: 3\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose(config_name="app")
    assert (
        cfg.dataset.name,
        cfg.protocol.name,
        cfg.protocol.epochs,
        cfg.protocol.lr,
        cfg.my_setting,
    ) == ("fashion", "quick", 10, 1e-3, 3)
    assert cfg.model.dropout == 0.5  # a protocol preset picks the model and its dropout


@pytest.mark.slow
def test_a_wheel_installed_into_a_fresh_environment_runs_from_an_empty_directory(tmp_path):
    """Build the wheel, install it (without dependencies) into a new virtual environment whose
    dependencies come from this one's site-packages through a .pth line (a fresh torch would be
    gigabytes), and run the console script from an empty directory: the installed package, not
    this checkout, must be what runs."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("ladarun-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Only the dependencies: the .pth line adds this environment's site-packages as a plain path,
    # so its editable-install hook (a .pth file there) is not run and this checkout stays hidden.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    where = subprocess.run(
        [str(python), "-c", "import ladarun, ladarun.conf; print(ladarun.conf.CONF_DIR)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(site), where
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [str(env_dir / "bin" / "ladarun"), "dataset=digits", "protocol=smoke", "progress=false"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        empty / "outputs" / "digits" / "ent-none" / "protocol=smoke" / "seed0" / "summary.json"
    ).exists()
