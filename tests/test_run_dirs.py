"""One run directory per configuration: the fixed part names dataset, acquisition-augment and
seed; every other override that changes results adds a folder named for it (rundir.identity.run_variant)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from helpers import SMOKE, ladarun, read_csv
from ladarun.rundir.identity import run_variant

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_settings_that_change_results_name_a_folder_the_rest_do_not():
    assert run_variant(["dataset=fashion", "acquisition=ent", "augment=none", "seed=3"]) == ""
    # Where data lives, the progress bar, the row/preset labels and the logger change nothing.
    assert run_variant(["data_dir=/d", "progress=false", "method=ent", "experiment=x"]) == ""
    assert run_variant(["logger=[csv,tensorboard]", "keep_checkpoint=true"]) == ""
    # A dataset's own setting is not the dataset option: it changes results.
    assert run_variant(["dataset=fashion", "dataset.augment=true"]) == "dataset.augment=true/"
    # Sorted, so the order on the command line does not matter.
    assert run_variant(["protocol.lr=0.01", "model=resnet18"]) == run_variant(
        ["model=resnet18", "protocol.lr=0.01"]
    )
    assert run_variant(["protocol.lr=0.01", "model=resnet18"]) == "model=resnet18,protocol.lr=0.01/"
    # Deletions and additions keep their sign; a "/" in a value never nests folders.
    assert run_variant(["~protocol.pool_subset", "+x=1"]) == "+x=1,~protocol.pool_subset/"
    assert run_variant(["model.weights=/a b/c"]) == "model.weights=_a_b_c/"


def test_a_long_name_keeps_whole_settings_and_ends_in_a_hash():
    overrides = [f"protocol.setting_{i}={i}" for i in range(8)]
    name = run_variant(overrides)
    assert len(name) <= 81 and name.endswith("/")
    head, more = name[:-1].rsplit(",", 1)
    kept = head.split(",")
    assert kept == sorted(overrides)[: len(kept)]  # whole settings, never cut mid-way
    count, digest = more.split("-")
    assert int(count) == len(overrides) - len(kept) and len(digest) == 8
    # Deterministic, and different for another value of a setting that did not fit.
    assert run_variant(overrides) == name
    assert run_variant(overrides[:-1] + ["protocol.setting_7=x"]) != name


def test_a_sweep_preset_keeps_the_plain_layout(compose_hydra):
    cfg = compose_hydra(
        ["experiment=table1_quick", "method=ent", "seed=2", "data_dir=/d", "progress=false"]
    )
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == "fashion/ent-none/seed2"


def test_an_override_adds_its_folder_to_single_runs_and_sweeps(compose_hydra):
    cfg = compose_hydra([*SMOKE, "protocol.lr=0.01", "seed=1"])
    assert cfg.hydra.run.dir == "outputs/synthetic/ent-none/protocol.lr=0.01,protocol=smoke/seed1"
    assert cfg.hydra.sweep.subdir == "synthetic/ent-none/protocol.lr=0.01,protocol=smoke/seed1"


def test_a_learning_rate_sweep_runs_every_value_in_its_own_folder(tmp_path):
    """The issue's case: a sweep over a protocol value used to refuse its second job."""
    res = ladarun("-m", *SMOKE, "protocol.lr=0.001,0.01", cwd=tmp_path, env_extra=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    root = tmp_path / "outputs" / "synthetic" / "ent-none"
    for lr in ("0.001", "0.01"):
        run = root / f"protocol.lr={lr},protocol=smoke" / "seed0"
        assert len(read_csv(run / "metrics.csv")) == 3
        assert OmegaConf.load(run / ".hydra" / "config.yaml").protocol.lr == float(lr)
    # The same command again finds both finished runs.
    again = ladarun("-m", *SMOKE, "protocol.lr=0.001,0.01", cwd=tmp_path, env_extra=ONE_THREAD)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("already finished") == 2
    # A single run with one more setting (the README's protocol.iterations=...) does not collide.
    more = ladarun(*SMOKE, "protocol.iterations=1", cwd=tmp_path, env_extra=ONE_THREAD)
    assert more.returncode == 0, more.stderr
    assert (root / "protocol.iterations=1,protocol=smoke" / "seed0" / "summary.json").exists()


# --- runs made before a config key existed ----------------------------------------------------


def older(cfg):
    """``cfg`` as a ladarun without ``dataset.seed`` composed it."""
    from omegaconf import open_dict

    with open_dict(cfg):
        del cfg.dataset.seed
    return cfg


def test_a_key_added_since_at_its_default_keeps_runs_finished_and_resumable(
    compose_cfg, tmp_path, monkeypatch
):
    from helpers import Crash, crash_at_evaluation
    from ladarun.errors import ConfigError
    from ladarun.runner import run_from_config

    # An unfinished run of the older config: its checkpoint resumes under the newer one.
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)
        with pytest.raises(Crash):
            run_from_config(older(compose_cfg(SMOKE)), tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    # Stopped again under the newer config, and resumed again.
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 1)
        with pytest.raises(Crash):
            run_from_config(compose_cfg(SMOKE), tmp_path)
    run_from_config(compose_cfg(SMOKE), tmp_path)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "metrics.csv")] == [0, 1, 2]
    # The finished run is skipped, not refused.
    before = (tmp_path / "metrics.csv").read_text()
    run_from_config(compose_cfg(SMOKE), tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == before
    # A value other than the default is a different configuration.
    with pytest.raises(ConfigError, match=r"differs in: dataset\.seed"):
        run_from_config(compose_cfg(SMOKE + ["dataset.seed=5"]), tmp_path)
