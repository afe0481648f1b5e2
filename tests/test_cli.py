"""The config tree, run_from_config, and the installed console script."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import (
    HAS_FASHION,
    SHARED_DATA,
    SMOKE,
    group_options,
    ladarun,
    ladarun_process,
    read_csv,
)
from ladarun.config import build
from ladarun.errors import ConfigError, DataNotFoundError
from ladarun.rundir.metrics import BASE_COLUMNS
from ladarun.runner import run_from_config

GROUPS = ("dataset", "acquisition", "augment", "model", "protocol", "optimizer", "scheduler")


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_builds_and_is_named_after_its_file(compose_cfg, group, tmp_path):
    options = group_options(group)
    assert options, f"conf/{group} is empty"
    for split in ("train/a", "train/b", "test/a", "test/b"):  # for dataset=imagefolder
        (tmp_path / split).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / split / "0.png")
    for option in options:
        root = [f"dataset.root={tmp_path}"] if option == "imagefolder" else []
        cfg = compose_cfg([f"{group}={option}", *root])
        assert cfg[group].name == option
        if group == "model":
            model = build(cfg.model, _partial_=True)(in_channels=1, num_classes=10)
            assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        else:
            assert build(cfg[group]) is not None


def test_expected_options_exist():
    assert set(group_options("dataset")) == {
        *("fashion", "mnist", "kmnist", "svhn", "cifar10", "cifar100", "imagefolder"),
        *("digits", "synthetic"),
    }
    assert set(group_options("optimizer")) == {"adam", "sgd", "adamw"}
    assert set(group_options("scheduler")) == {"none", "cosine", "step"}
    assert set(group_options("acquisition")) >= {
        "random",
        "ent",
        "var",
        "bald",
        "coreset",
        "badge",
        "vaal",
    }
    assert set(group_options("augment")) >= {
        "none",
        "infomixup",
        "infomixup_fixed",
        "manifold_mixup",
        "adamixup",
        "infostn",
        "infostn_fixed",
        "bgadl",
    }
    assert set(group_options("model")) == {"resnet18", "cnn", "torchvision"}
    assert set(group_options("protocol")) == {"paper", "paper_budget", "quick", "smoke"}


def test_defaults_and_protocol_presets(compose_cfg, monkeypatch):
    cfg = compose_cfg()
    assert (cfg.dataset.name, cfg.model.name, cfg.protocol.name, cfg.device) == (
        "digits",
        "cnn",
        "quick",
        "auto",
    )
    paper = compose_cfg(["protocol=paper"])
    assert paper.model.name == "resnet18"  # the paper protocol brings ResNet-18 ...
    p = paper.protocol
    assert (
        p.iterations,
        p.initial_per_class,
        p.query,
        p.pool_subset,
        p.initial_epochs,
        p.epochs,
        p.batch_size,
        p.lr,
        p.reinit,
    ) == (
        100,
        2,
        10,
        2000,
        50,
        50,
        10,
        1e-3,
        False,
    )
    # ... unless told otherwise
    assert compose_cfg(["protocol=paper", "model=cnn"]).model.name == "cnn"
    monkeypatch.setenv("LADARUN_DATA", "/somewhere/data")
    assert compose_cfg().data_dir == "/somewhere/data"
    monkeypatch.delenv("LADARUN_DATA")
    assert compose_cfg().data_dir == "./data"


def test_smoke_run_on_synthetic_writes_the_csv(compose_cfg, tmp_path):
    best = run_from_config(compose_cfg(SMOKE + ["acquisition=var"]), tmp_path)
    table = read_csv(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in table] == [0, 1, 2]
    # 4 classes x 2, then +4 per iteration
    assert [int(r["n_labeled"]) for r in table] == [
        8,
        12,
        16,
    ]
    assert list(table[0]) == [*BASE_COLUMNS, "val_acc"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_acc"] == pytest.approx(best)
    assert summary["run"]["config"]["acquisition"]["name"] == "var"


def test_finished_run_is_skipped_and_never_overwritten(compose_cfg, tmp_path):
    cfg = compose_cfg(SMOKE)
    run_from_config(cfg, tmp_path)
    before = (tmp_path / "metrics.csv").read_bytes()
    mtime = (tmp_path / "metrics.csv").stat().st_mtime_ns
    run_from_config(cfg, tmp_path)  # same config: skipped
    assert (tmp_path / "metrics.csv").stat().st_mtime_ns == mtime
    config_yaml = (tmp_path / ".hydra" / "config.yaml").read_bytes()  # the run wrote its own
    with pytest.raises(ConfigError, match="different configuration.*protocol"):
        run_from_config(compose_cfg(SMOKE + ["protocol.epochs=2"]), tmp_path)
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert (tmp_path / ".hydra" / "config.yaml").read_bytes() == config_yaml  # never rewritten
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml").protocol.epochs == 1


def test_query_larger_than_pool_is_a_clear_error(compose_cfg, tmp_path):
    cfg = compose_cfg(SMOKE + ["protocol.query=500", "protocol.pool_subset=null"])
    with pytest.raises(ConfigError, match="protocol.query=500 is larger than the unlabeled pool"):
        run_from_config(cfg, tmp_path)


@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_iterations_is_a_clear_error(compose_cfg, tmp_path, value):
    with pytest.raises(ConfigError, match="protocol.iterations must be a positive integer"):
        run_from_config(compose_cfg(SMOKE + [f"protocol.iterations={value}"]), tmp_path)


@pytest.mark.parametrize("dataset", ["fashion", "svhn", "cifar10"])
def test_missing_data_offline_names_the_folder(compose_cfg, tmp_path, dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = compose_cfg([f"dataset={dataset}", "protocol=smoke", f"data_dir={empty}"])
    with pytest.raises(DataNotFoundError, match=str(empty)):
        run_from_config(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST not in ../shared/data")
def test_smoke_run_on_real_fashion_mnist(compose_cfg, tmp_path):
    overrides = [
        "dataset=fashion",
        "protocol=smoke",
        "protocol.initial_epochs=20",
        "protocol.epochs=5",
    ]
    cfg = compose_cfg(overrides + ["progress=false", f"data_dir={SHARED_DATA}"])
    run_from_config(cfg, tmp_path)
    table = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in table] == [20, 24, 28]
    assert all(0 <= float(r["test_acc"]) <= 100 for r in table)
    assert float(table[-1]["best_acc"]) > 35.0  # well above chance (10%) from 20-28 labels


# --- the console script ----------------------------------------------------------------------
# The first run goes through the installed script in a subprocess, so that the fast suite catches
# a broken entry point; the rest call the same entry point (ladarun.cli:main) in this process.


def test_console_script_runs_into_the_deterministic_run_dir(tmp_path):
    res = ladarun_process(*SMOKE, "acquisition=random", "seed=3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # The fixed part names dataset, acquisition-augment and seed; protocol=smoke, a non-default
    # setting, adds its own folder.
    run_dir = tmp_path / "outputs" / "synthetic" / "random-none" / "protocol=smoke" / "seed3"
    assert len(read_csv(run_dir / "metrics.csv")) == 3
    assert (run_dir / "summary.json").exists()
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").acquisition.name == "random"
    assert "metrics.csv" in res.stdout + res.stderr
    again = ladarun(*SMOKE, "acquisition=random", "seed=3", cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr


def test_console_script_help_lists_groups_and_options(tmp_path):
    res = ladarun("--help", cwd=tmp_path)
    assert res.returncode == 0
    for word in (
        "dataset: cifar10, cifar100, digits, fashion, imagefolder, kmnist, mnist, svhn, synthetic",
        "protocol: paper, paper_budget, quick, smoke",
        "acquisition:",
        "model: cnn, resnet18, torchvision",
    ):
        assert word in res.stdout


def test_unknown_option_lists_the_valid_ones(tmp_path):
    res = ladarun("dataset=imagenet", cwd=tmp_path)
    assert res.returncode != 0
    assert "Could not find 'dataset/imagenet'" in res.stderr
    assert "fashion" in res.stderr and "cifar10" in res.stderr


def test_user_errors_are_one_line_without_traceback(tmp_path):
    res = ladarun(
        "dataset=fashion", "protocol=smoke", f"data_dir={tmp_path / 'nothing'}", cwd=tmp_path
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "ladarun: error:" in res.stderr and str(tmp_path / "nothing") in res.stderr
