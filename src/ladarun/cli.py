"""``ladarun``: Hydra composes the config, runner.py runs it.

Before Hydra starts, the command line is checked for the two mistakes Hydra would report badly
(an unknown launcher, a sweep preset without -m). torch and the domain code are imported only
when a run starts, so ``ladarun --help`` and ``ladarun --cfg job`` answer at once.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Optional, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .conf import CONF_DIR
from .errors import ConfigError, LadarunError, RunLockedError

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
    from .rundir.files import only_hydra_files, remove_fresh
    from .runner import run_from_config

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    fresh = only_hydra_files(out_dir)
    try:
        # As written (resolve=False): data_dir=${oc.env:...} is checked by the run, in one line.
        overrides = cast(list[str], OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False))
        return run_from_config(cfg, out_dir, sweep_dir, overrides)
    except LadarunError as err:
        # Refused before anything of ladarun's was written: leave no folder behind that a table
        # would list or a corrected command would have to get past.
        removable = fresh and isinstance(err, ConfigError) and only_hydra_files(out_dir)
        if multirun and not isinstance(err, RunLockedError):  # a live run's log is its own
            log.error("%s", err)
        if removable:
            remove_fresh(out_dir, stop=sweep_dir if sweep_dir is not None else Path.cwd())
        if multirun:
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


# The names that become folders of a run's path (conf/config.yaml's hydra.run.dir).
_FOLDER_KEYS = ("dataset.name", "acquisition.name", "augment.name")


def check_folder_names(argv: list[str]) -> None:
    """Raise UnsafePathError for a name override that would put a run outside the outputs folder
    (``dataset.name=../../x``). The config's resolver refuses it too, but inside Hydra, which
    prints a traceback; here it is one line, and nothing is created."""
    from .rundir.identity import folder_name

    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in _FOLDER_KEYS:
            for one in value.split(","):  # a sweep's values, each its own folder
                folder_name(one.strip("'\""), key)


def check_output_folder(argv: list[str]) -> None:
    """Raise a one-line error when the folder runs go to cannot be created or written (a
    read-only working folder, a full disk): Hydra would create it, and fail with a traceback."""
    from .rundir.files import check_writable

    if _NO_RUN_FLAGS & set(argv):
        return
    keys = (
        ("hydra.sweep.dir", "hydra.run.dir")
        if {"-m", "--multirun"} & set(argv)
        else ("hydra.run.dir",)
    )
    chosen = [a.partition("=")[2] for a in argv if a.partition("=")[0] in keys]
    for folder in chosen or ["outputs"]:
        if "${" not in folder:  # an interpolated folder is Hydra's to resolve
            check_writable(Path(folder))


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
    from .config import compose, sweep_preset_error

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
        from .version import __version__

        print(f"ladarun {__version__}")
        return None
    try:
        check_launcher(argv)
        check_folder_names(argv)
        check_output_folder(argv)
        check_single_run(argv)
    except LadarunError as err:
        print(f"ladarun: error: {err}", file=sys.stderr)
        sys.exit(2)
    return hydra_main()


if __name__ == "__main__":
    main()
