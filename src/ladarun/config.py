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
    optimizer: Any = None  # the optimizer group's partial (None: a config from before it, Adam)
    scheduler: Any = None  # the scheduler group's partial (None: a constant learning rate)


def check_settings(cfg: DictConfig) -> Parts:
    """Build every part that needs no data and check the settings; raise ConfigError on the first
    impossible one. Nothing is written and nothing trains before this has passed."""
    from .runtime import SpeedOptions, resolve_device

    try:  # every ${...} of the config, at once: an unset variable is one line, not a traceback
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        text = " ".join(str(err).split())
        raise ConfigError(f"the config does not resolve: {text}; set what it names") from None
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}; set seed=N, e.g. seed=0")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(
            f"seed must be from 0 to 2**32 - 1 (NumPy's range), got {cfg.seed}; set e.g. seed=0"
        )
    device = resolve_device(cfg.device)
    SpeedOptions(**cfg.speed).check_device(device)
    protocol = build(cfg.protocol)
    acquisition = build(cfg.acquisition)
    if cfg.get("embedding_cache") is not None:  # a config saved before 0.4.0 has none
        acquisition.use_cache(cfg.embedding_cache)  # TypiClust's and ProbCover's embedding
    augment = build(cfg.augment)
    augment.check_compatible(acquisition, cfg.acquisition.name)
    augment.check_protocol(protocol)
    optimizer, scheduler = _training_options(cfg)
    return Parts(
        protocol=protocol,
        acquisition=acquisition,
        augment=augment,
        model_factory=_model_factory(cfg.model),
        source=build(cfg.dataset, name=cfg.dataset.name),
        device=device,
        # a missing optional package (tensorboard, mlflow) stops the run here, naming its extra
        loggers=[build(n) for n in (cfg.get("logger") or {}).values() if "_target_" in n],
        optimizer=optimizer,
        scheduler=scheduler,
    )


def _model_factory(node: DictConfig) -> Any:
    """The model group's partial; a factory with a ``check`` (model=torchvision's) checks its
    keys now (an unknown arch, weights that cannot be had), before anything is written."""
    factory = build(node, _partial_=True)
    check = getattr(factory.func, "check", None)
    if callable(check):
        check(**factory.keywords)
    return factory


def _training_options(cfg: DictConfig) -> tuple[Any, Any]:
    """The optimizer and scheduler groups' partials, each key checked against its class."""
    from .training import check_factory

    built = []
    for group, first in (("optimizer", "params"), ("scheduler", "optimizer")):
        node = cfg.get(group)
        factory = build(node) if node is not None and "_target_" in node else None
        if factory is not None:
            refused = {"lr": "set the learning rate with protocol.lr"} if first == "params" else {}
            check_factory(factory, f"{group}={node.name}", first, refused)
        built.append(factory)
    return built[0], built[1]
