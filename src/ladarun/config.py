"""ladarun's config: compose it, build a run's parts from it, and check its settings.

The CLI (cli.py), the Python API (api.py), the runner and the reports all compose and build
through here. Nothing is written and nothing trains in this module; torch is imported only when
a part is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, cast

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .conf import CONF_DIR
from .errors import ConfigError, LadarunError


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """ladarun's config for ``overrides``, with its ``hydra`` node, as the CLI composes it.

    Hydra's errors (an unknown option, a sweep value such as ``seed=0,1``) become one-line
    ConfigErrors.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(
                config_name="config", overrides=list(overrides), return_hydra_config=True
            )
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra's message, without the search path it appends, on one line.
        text = str(err).split("Config search path")[0]
        raise ConfigError(" ".join(text.split())) from None


def sweep_preset_error(cfg: DictConfig, overrides: Sequence[str]) -> Optional[str]:
    """The message for a sweep preset composed as a single run, or None when it is not one.

    An ``experiment=...`` preset that sets ``hydra.sweeper.params`` is a sweep; without ``-m``
    Hydra would ignore those params and quietly run the one default run instead.
    """
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not params:
        return None
    chosen = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == "experiment"]
    what = chosen[0] if chosen else "this config"
    return (
        f"{what} is a sweep preset (it sweeps {', '.join(params)}); add -m to run it: "
        f"ladarun -m {' '.join(overrides)}"
    )


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate an option from its ``_target_``; ``name`` is the option's label, not an argument."""
    # a DictConfig gives a dict
    params = cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))
    params.pop("name", None)
    try:
        return instantiate(params, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, LadarunError):
            raise err.__cause__ from None  # our message already names the fix
        raise


@dataclass
class Parts:
    """What a run is built from, checked before anything is written (``check_settings``)."""

    protocol: Any
    acquisition: Any
    augment: Any
    model_factory: Any
    source: Any  # the dataset source; its files are read once the run holds its directory
    device: Any  # torch.device
    loggers: list[Any]  # the logger group's trackers (rundir/trackers.py); csv needs none


def check_settings(cfg: DictConfig) -> Parts:
    """Build every part that needs no data and check the settings; raise ConfigError on the first
    impossible one. Nothing is written and nothing trains before this has passed."""
    from .runtime import SpeedOptions, resolve_device

    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}; set seed=N, e.g. seed=0")
    device = resolve_device(cfg.device)
    SpeedOptions(**cfg.speed).check_device(device)
    protocol = build(cfg.protocol)
    acquisition = build(cfg.acquisition)
    augment = build(cfg.augment)
    augment.check_compatible(acquisition, cfg.acquisition.name)
    augment.check_protocol(protocol)
    return Parts(
        protocol=protocol,
        acquisition=acquisition,
        augment=augment,
        model_factory=build(cfg.model, _partial_=True),
        source=build(cfg.dataset, name=cfg.dataset.name),
        device=device,
        # a missing optional package (tensorboard, mlflow) stops the run here, naming its extra
        loggers=[build(n) for n in (cfg.get("logger") or {}).values() if "_target_" in n],
    )
