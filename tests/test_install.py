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


def test_dependencies_are_ranges_and_constraints_pin_each_within_its_range():
    """pyproject.toml declares ranges (a library must not pin); constraints.txt, which make installs
    with pip -c, pins every declared package (the dev extra and the extras it names included)
    to a version inside its range, so `make` reproduces the tested set."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [Requirement(r) for r in project["dependencies"]]
    todo = [Requirement(r) for r in extras["dev"]]
    while todo:  # "ladarun[tensorboard,mlflow]" in the dev extra: those extras' packages
        req = todo.pop()
        if canonicalize_name(req.name) == "ladarun":
            todo += [Requirement(r) for extra in req.extras for r in extras[extra]]
        else:
            declared.append(req)
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    pinned = [str(r) for r in declared[: len(project["dependencies"])] if "==" in str(r)]
    assert not pinned, f"pyproject.toml pins {pinned}: give a range, pin in constraints.txt"
    for req in declared:
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"constraints.txt lacks {req.name}: run make constraints"
        assert req.specifier.contains(pin, prereleases=True), (
            f"constraints.txt's {req.name}=={pin} is outside pyproject.toml's {req}"
        )
    assert "ladarun" not in pins  # the project itself is not a constraint


def test_every_package_under_src_is_listed_for_the_wheel():
    """pyproject.toml lists its packages (conf/ is mapped to ladarun.conf, which rules out
    setuptools' package discovery): a new package that is not listed would be missing from the
    wheel while every test of this checkout still passed."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(REPO / "src").parts)
        for p in (REPO / "src").rglob("*.py")
        if "egg-info" not in str(p)
    }
    assert found - {"hydra_plugins"} <= listed
    assert "ladarun.conf" in listed and (REPO / "conf" / "config.yaml").is_file()


def test_one_version_everywhere():
    """The package, CITATION.cff and the newest CHANGELOG entry name the same version."""
    import importlib.metadata
    import re

    found = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert found is not None
    version = found.group(1)
    assert importlib.metadata.version("ladarun") == version
    cff = (REPO / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(version)}$", cff, re.M)
    newest = re.search(r"^## \[([^\]]+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert newest is not None and newest.group(1) == version
