"""``ladarun``: compose a config with Hydra and hand it to the active-learning loop.

This is the only module that imports Hydra. ``run_from_config`` does the work and can be
called on a config composed with Hydra's compose API (the tests do).
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, LadarunError
from .loop import CHECKPOINT, resolve_device, run_active_learning
from .records import write_json_atomic
from .speed import SpeedOptions

log = logging.getLogger("ladarun")

# conf/hydra/launcher/submitit_local.yaml deliberately shares its name with the plugin's schema
# (it spells out every key, so it works whether or not Hydra still merges the two).
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against ConfigStore schema")

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Keys that may differ between two invocations of the same run: where data lives, the progress
# bar, and the labels of the Table 1 row or sweep preset that chose the config.
_OPERATIONAL_KEYS = ("data_dir", "progress", "checkpoint", "keep_checkpoint", "method", "experiment")
# The resolved config of the run in a directory, written when it starts (summary.json has it too).
RUN_CONFIG = "run_config.json"
# Written into the run directory when a run stops on an error (removed when it runs again), so
# the aggregator can tell a failed run from one that is still going or was killed.
FAILURE = "failed.json"
# Launchers in conf/hydra/launcher/ and Hydra's own, with the plugin module and extra each needs.
LAUNCHER_PLUGINS = {
    "basic": None,
    "local": ("hydra_plugins.hydra_joblib_launcher", "parallel"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "parallel"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate an option from its ``_target_``; ``name`` is the option's label, not an argument."""
    params = OmegaConf.to_container(node, resolve=True)
    params.pop("name", None)
    try:
        return instantiate(params, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, LadarunError):
            raise err.__cause__ from None  # our message already names the fix
        raise


# ``aux`` holds a protocol's budgets for auxiliary networks; an option that uses one copies the
# value into its own node (acquisition.steps: ${aux.vaal_steps}), where the comparison sees it.
# Comparing ``aux`` itself would make a change of VAAL's budget refuse every finished row.
_INDIRECT_KEYS = ("aux",)


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _OPERATIONAL_KEYS + _INDIRECT_KEYS}


def fingerprint(config: dict) -> str:
    """A hash of everything in ``config`` that changes a run's results."""
    return hashlib.sha256(json.dumps(_comparable(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _previous_config(out_dir: Path) -> Optional[dict]:
    """The config of the run already in ``out_dir`` (finished or resumable), if any."""
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text()).get("run", {}).get("config", {})
    if (out_dir / CHECKPOINT).exists() and (out_dir / RUN_CONFIG).exists():
        return json.loads((out_dir / RUN_CONFIG).read_text())
    return None


def check_existing(out_dir: Path, config: dict) -> Optional[float]:
    """Guard what ``out_dir`` already holds before a run starts there.

    Returns the best accuracy of a finished run of this same config (the caller skips it),
    or None when the run should start or resume. Raises ConfigError when ``out_dir`` holds a
    finished or resumable run of a *different* config, so a new run never overwrites results.
    """
    previous = _previous_config(out_dir)
    if previous is None:
        return None
    if _comparable(previous) == _comparable(config):
        summary_path = out_dir / "summary.json"
        return float(json.loads(summary_path.read_text())["best_acc"]) if summary_path.exists() else None
    hydra_config = out_dir / ".hydra" / "config.yaml"
    if hydra_config.exists() and previous:
        # Hydra has just overwritten the earlier run's config with the new one: put it back.
        hydra_config.write_text(OmegaConf.to_yaml(OmegaConf.create(previous)))
    before, now = _comparable(previous), _comparable(config)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    state = "finished" if (out_dir / "summary.json").exists() else "resumable (unfinished)"
    raise ConfigError(
        f"{out_dir} already holds a {state} run with a different configuration (differs in: {', '.join(changed)}); "
        "choose another directory with hydra.run.dir=... or move the old run away"
    )


def run_from_config(cfg: DictConfig, out_dir: Path | str) -> float:
    """Build dataset, model, acquisition, augmentation and protocol from ``cfg`` and run them.

    A finished run of the same config in ``out_dir`` is skipped; an unfinished one with a
    checkpoint resumes after its last finished iteration.
    """
    out_dir = Path(out_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    done = check_existing(out_dir, config)
    if done is not None:
        log.info("Run in %s is already finished (best accuracy %.2f%%); skipping it.", out_dir, done)
        return done
    if (out_dir / "metrics.csv").exists() and not (cfg.checkpoint and (out_dir / CHECKPOINT).exists()):
        log.warning("%s holds an unfinished run without a checkpoint; starting it again from the beginning.", out_dir)

    (out_dir / FAILURE).unlink(missing_ok=True)
    try:
        return _run(cfg, out_dir, config)
    except Exception as err:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / FAILURE, {"error": type(err).__name__, "message": str(err)})
        raise


def _run(cfg: DictConfig, out_dir: Path, config: dict) -> float:
    device = resolve_device(cfg.device)
    protocol = build(cfg.protocol)
    acquisition = build(cfg.acquisition)
    augment = build(cfg.augment)
    augment.check_compatible(acquisition, cfg.acquisition.name)
    model_factory = build(cfg.model, _partial_=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / RUN_CONFIG, config)
    data = build(cfg.dataset, name=cfg.dataset.name).load(cfg.data_dir, device)
    log.info(
        "dataset=%s (%d train, %d test) model=%s acquisition=%s augment=%s protocol=%s seed=%d device=%s",
        cfg.dataset.name, data.y_train.numel(), data.y_test.numel(), cfg.model.name, cfg.acquisition.name,
        cfg.augment.name, cfg.protocol.name, cfg.seed, device,
    )
    summary = run_active_learning(
        data=data,
        model_factory=model_factory,
        acquisition=acquisition,
        augment=augment,
        protocol=protocol,
        out_dir=out_dir,
        seed=cfg.seed,
        device=device,
        deterministic=cfg.deterministic,
        progress=cfg.progress,
        run_info={"config": config},
        checkpoint=cfg.checkpoint,
        keep_checkpoint=cfg.keep_checkpoint,
        fingerprint=fingerprint(config),
        speed=SpeedOptions(**config["speed"]),
    )
    log.info("metrics: %s", summary.metrics_path)
    log.info(
        "best accuracy %.2f%%, final %.2f%% with %d labels after %d iterations; %.1f s on %s",
        summary.best_acc, summary.final_acc, summary.n_labeled, summary.iterations, summary.total_s, summary.device,
    )
    return summary.best_acc


def check_launcher(argv: list[str]) -> None:
    """Raise ConfigError for an unknown ``hydra/launcher=...`` or one whose plugin is not installed.

    Hydra would report both, but with its config search path instead of the fix.
    """
    import importlib.util

    options = {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")} | set(LAUNCHER_PLUGINS)
    for arg in argv:
        if not arg.startswith("hydra/launcher="):
            continue
        name = arg.split("=", 1)[1]
        if name not in options:
            raise ConfigError(
                f"unknown launcher {name!r}; use hydra/launcher= one of {', '.join(sorted(options))} "
                "(conf/hydra/launcher/ has ladarun's: local, slurm, submitit_local)"
            )
        plugin = LAUNCHER_PLUGINS.get(name)
        if plugin is not None and importlib.util.find_spec(plugin[0]) is None:
            raise ConfigError(
                f"hydra/launcher={name} needs the {plugin[0].split('.')[-1].replace('_', '-')} plugin; "
                f"install it with pip install -e '.[{plugin[1]}]'"
            )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    try:
        return run_from_config(cfg, HydraConfig.get().runtime.output_dir)
    except LadarunError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # let the launcher record this job as failed; the other jobs go on
        print(f"ladarun: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> Optional[float]:
    """The ``ladarun`` console script."""
    try:
        check_launcher(sys.argv[1:])
    except ConfigError as err:
        print(f"ladarun: error: {err}", file=sys.stderr)
        sys.exit(2)
    return hydra_main()


if __name__ == "__main__":
    main()
