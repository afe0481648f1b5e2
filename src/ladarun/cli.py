"""``ladarun``: compose a config with Hydra and hand it to the active-learning loop.

This and api.py (its Python twin) are the only modules that import Hydra. ``run_from_config``
builds every object from a composed config and calls the loop; it works on a config composed
with Hydra's compose API too (the tests, ladarun.run). torch and the domain code are imported
only when a run starts, so ``ladarun --help`` and ``ladarun --cfg job`` answer at once.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .conf import CONF_DIR
from .errors import ConfigError, LadarunError

log = logging.getLogger("ladarun")
# A log file on a full disk must not print a traceback per record: the write that fails for
# ladarun's own files already stops the run with one line (DiskFullError).
logging.raiseExceptions = False

# conf/hydra/launcher/submitit_local.yaml deliberately shares its name with the plugin's schema
# (it spells out every key, so it works whether or not Hydra still merges the two).
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against ConfigStore schema"
)

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
    loggers: list[Any]  # the logger group's trackers (tracking.py); csv needs none


def check_settings(cfg: DictConfig) -> Parts:
    """Build every part that needs no data and check the settings; raise ConfigError on the first
    impossible one. Nothing is written and nothing trains before this has passed."""
    from .runtime import resolve_device

    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}; set seed=N, e.g. seed=0")
    device = resolve_device(cfg.device)
    protocol = build(cfg.protocol)
    acquisition = build(cfg.acquisition)
    acquisition.use_cache(cfg.embedding_cache)  # TypiClust's and ProbCover's embedding
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


def run_from_config(cfg: DictConfig, out_dir: Path | str) -> float:
    """Build dataset, model, acquisition, augmentation and protocol from ``cfg`` and run them.

    Settings are checked first (check_settings), before anything is written. A finished run of
    the same config in ``out_dir`` is skipped; an unfinished one with a checkpoint resumes after
    its last finished iteration. Only one process at a time runs a directory: a second one stops
    at once (RunLockedError).
    """
    from .state import run_lock

    parts = check_settings(cfg)
    with run_lock(Path(out_dir)):
        return _run_locked(cfg, Path(out_dir), parts)


def _run_locked(cfg: DictConfig, out_dir: Path, parts: Parts) -> float:
    """run_from_config's work, under the run lock: guard the directory, build, run, record."""
    from .state import (
        CHECKPOINT,
        FAILURE,
        METRICS,
        RUN_CONFIG,
        check_existing,
        run_fingerprint,
        write_json_atomic,
    )

    # A DictConfig gives a dict.
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))

    @functools.cache  # check_existing and run_fingerprint both ask; the conf files are read once
    def defaults() -> dict[str, Any]:  # only read when the folder holds an earlier run
        from .report.runs import default_config

        return default_config(config)

    done = check_existing(out_dir, config, defaults)
    # Before run_config.json is rewritten below: an earlier run's checkpoint is checked against it.
    run_fp = run_fingerprint(out_dir, config, defaults) if done is None else ""
    if done is not None:
        log.info(
            "Run in %s is already finished (best accuracy %.2f%%); skipping it.", out_dir, done
        )
        return done
    from .loop import RunOptions, run_active_learning  # torch: only for a run that goes ahead
    from .runtime import SpeedOptions, use_slurm_threads

    use_slurm_threads()  # a Slurm task runs as many threads as it has CPUs

    if (out_dir / METRICS).exists() and not (cfg.checkpoint and (out_dir / CHECKPOINT).exists()):
        log.warning(
            "%s holds an unfinished run without a checkpoint; starting it again from the beginning.",
            out_dir,
        )
    (out_dir / FAILURE).unlink(missing_ok=True)
    try:
        device = parts.device
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (
            cfg.checkpoint and (out_dir / CHECKPOINT).exists() and (out_dir / RUN_CONFIG).exists()
        ):
            # A resumed run keeps the config it started with (its checkpoint's fingerprint).
            write_json_atomic(out_dir / RUN_CONFIG, config)
        data = parts.source.load(cfg.data_dir, device)
        log.info(
            "dataset=%s (%d train, %d test) model=%s acquisition=%s augment=%s protocol=%s seed=%d device=%s",
            cfg.dataset.name,
            data.y_train.numel(),
            data.y_test.numel(),
            cfg.model.name,
            cfg.acquisition.name,
            cfg.augment.name,
            cfg.protocol.name,
            cfg.seed,
            device,
        )
        log_root, experiment = _tracking_root(out_dir)
        options = RunOptions(
            deterministic=cfg.deterministic,
            progress=cfg.progress,
            checkpoint=cfg.checkpoint,
            keep_checkpoint=cfg.keep_checkpoint,
            fingerprint=run_fp,
            speed=SpeedOptions(**config["speed"]),
            run_info={"config": config},
            loggers=parts.loggers,
            log_root=log_root,
            experiment=experiment,
        )
        summary = run_active_learning(
            data=data,
            model_factory=parts.model_factory,
            acquisition=parts.acquisition,
            augment=parts.augment,
            protocol=parts.protocol,
            out_dir=out_dir,
            seed=cfg.seed,
            device=device,
            options=options,
        )
    except Exception as err:
        _record_failure(out_dir / FAILURE, err)
        raise
    log.info("metrics: %s", summary.metrics_path)
    log.info(
        "best accuracy %.2f%%, final %.2f%% with %d labels after %d iterations; %.1f s on %s",
        summary.best_acc,
        summary.final_acc,
        summary.n_labeled,
        summary.iterations,
        summary.total_s,
        summary.device,
    )
    return summary.best_acc


def _tracking_root(out_dir: Path) -> tuple[Path, str]:
    """Where trackers put their default stores, and the MLflow experiment: the sweep folder and
    its name under ``ladarun -m`` (a sweep is one experiment), else the run folder and "ladarun"."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        root = Path(HydraConfig.get().sweep.dir)
        return root, root.resolve().name
    return out_dir, "ladarun"


def _record_failure(path: Path, err: BaseException) -> None:
    """failed.json for the table; on a full disk it may not fit, and the error says so already."""
    from .state import write_json_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"error": type(err).__name__, "message": str(err)})
    except OSError:
        pass


def check_launcher(argv: list[str]) -> None:
    """Raise ConfigError for an unknown ``hydra/launcher=...`` or one whose plugin is not installed.

    Hydra would report both, but with its config search path instead of the fix.
    """
    import importlib.util

    options = {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")} | set(
        LAUNCHER_PLUGINS
    )
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
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    fresh = _only_hydra_files(out_dir)
    try:
        return run_from_config(cfg, out_dir)
    except LadarunError as err:
        if fresh and isinstance(err, ConfigError) and _only_hydra_files(out_dir):
            # Refused before anything of ladarun's was written: leave no folder behind that a
            # table would list or a corrected command would have to get past.
            _remove_fresh(out_dir, stop=Path(hydra_cfg.sweep.dir if multirun else Path.cwd()))
        if multirun:
            log.error("%s", err)
            raise  # the sweeper lists it with the other failed jobs at the end; the rest go on
        print(f"ladarun: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if multirun:
            raise
        print(
            f"ladarun: interrupted; {out_dir} keeps every finished iteration: rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception:
        if multirun:  # the sweep's summary gives one line; the traceback goes to the run's log
            log.exception("the run stopped on an unexpected error")
        raise


_HYDRA_FILES = {".hydra", "ladarun.log"}


def _only_hydra_files(out_dir: Path) -> bool:
    """True when ``out_dir`` holds nothing but what Hydra writes before a job starts."""
    return out_dir.is_dir() and all(p.name in _HYDRA_FILES for p in out_dir.iterdir())


def _remove_fresh(out_dir: Path, stop: Path) -> None:
    """Remove ``out_dir`` (Hydra's files only) and the parents it emptied, up to ``stop``."""
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    stop = stop.resolve()
    for parent in out_dir.resolve().parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty: another run lives there
            break


# Hydra flags after which nothing runs (print the config, help or info), so a sweep preset
# composed without -m is fine there.
_NO_RUN_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "-sc"}


def check_single_run(argv: list[str]) -> None:
    """Raise ConfigError for a sweep preset (``experiment=...``) given without ``-m``.

    Without -m Hydra ignores the preset's hydra.sweeper.params and silently runs one default run.
    Only composed when an experiment is chosen; a config that does not compose here is left for
    Hydra to report.
    """
    if {"-m", "--multirun"} & set(argv) or _NO_RUN_FLAGS & set(argv):
        return
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if not any(o.lstrip("+~").split("=", 1)[0] == "experiment" for o in overrides):
        return
    from .api import compose, sweep_preset_error  # pandas: only when an experiment is chosen

    try:
        cfg = compose(overrides)
    except ConfigError:
        return
    message = sweep_preset_error(cfg, overrides)
    if message is not None:
        raise ConfigError(message)


def main() -> Optional[float]:
    """The ``ladarun`` console script (also ``python -m ladarun``)."""
    argv = sys.argv[1:]
    if "--version" in argv:  # ladarun's version, not Hydra's
        from . import __version__

        print(f"ladarun {__version__}")
        return None
    try:
        check_launcher(argv)
        check_single_run(argv)
    except ConfigError as err:
        print(f"ladarun: error: {err}", file=sys.stderr)
        sys.exit(2)
    return hydra_main()


if __name__ == "__main__":
    main()
