"""ladarun's Hydra configs, shipped inside the package: compose them as ``pkg://ladarun.conf``.

``config.yaml`` is the root; every folder is a config group (dataset, model, acquisition,
augment, protocol, method, experiment, hydra/launcher) whose files are its options.
"""

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent


def _run_variant(overrides: Any) -> str:
    from ..rundir.identity import run_variant

    # As written: iterating a ListConfig would resolve data_dir=${oc.env:...} here, inside Hydra.
    if OmegaConf.is_config(overrides):
        overrides = OmegaConf.to_container(overrides, resolve=False)
    return run_variant(overrides or ())


def _folder(name: Any) -> str:
    from ..rundir.identity import folder_name

    return folder_name(name)


# ``${ladarun.folder:${dataset.name}}`` in hydra.run.dir and hydra.sweep.subdir: an option's
# name becomes a folder only when it cannot climb out of the outputs folder.
OmegaConf.register_new_resolver("ladarun.folder", _folder, replace=True)
# ``${ladarun.run_variant:${hydra.overrides.task}}`` in hydra.run.dir and hydra.sweep.subdir:
# a folder per non-default setting (rundir.identity.run_variant). Registered here, where the configs are,
# so every composition (the CLI, the compose API, the tests) resolves the same run directory.
OmegaConf.register_new_resolver("ladarun.run_variant", _run_variant, replace=True)
