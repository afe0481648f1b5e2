from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ladarun.conf import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it, as in the developers' checkouts.
SHARED_DATA = REPO.parent / "shared" / "data"
HAS_FASHION = (SHARED_DATA / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.fixture
def compose_cfg() -> Callable[[Sequence[str]], DictConfig]:
    """Compose ladarun's config with overrides, as the CLI would (without running it)."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture
def compose_hydra() -> Callable[[Sequence[str]], DictConfig]:
    """Like compose_cfg, with the ``hydra`` node (launcher, sweeper, sweep dir) included."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)

    return _compose


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
