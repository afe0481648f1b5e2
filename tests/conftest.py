"""Fixtures shared by the test modules; shared plain helpers are in helpers.py and runs_factory.py."""

from __future__ import annotations

from typing import Callable, Sequence

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ladarun.conf import CONF_DIR


@pytest.fixture
def compose_cfg() -> Callable[[Sequence[str]], DictConfig]:
    """Compose ladarun's config with overrides, as the CLI would (without running it)."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config", overrides=list(overrides), return_hydra_config=False
            )

    return _compose


@pytest.fixture
def compose_hydra() -> Callable[[Sequence[str]], DictConfig]:
    """Like compose_cfg, with the ``hydra`` node (launcher, sweeper, sweep dir) included."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="config", overrides=list(overrides), return_hydra_config=True
            )

    return _compose


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the setting.

    The acquisition tests push many tiny tensors; on a shared 2-core machine, two OpenMP threads
    spin-waiting for each other made them up to ~100x slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(trylast=True)  # after -m has deselected: CUDA is probed only for gpu tests
def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``gpu`` where torch has no CUDA device (make test hides them)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_tests and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (make test-gpu on a GPU machine)")
        for item in gpu_tests:
            item.add_marker(skip)
