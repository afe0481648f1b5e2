"""ladarun's Hydra configs, shipped inside the package: compose them as ``pkg://ladarun.conf``.

``config.yaml`` is the root; every folder is a config group (dataset, model, acquisition,
augment, protocol, method, experiment, hydra/launcher) whose files are its options.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
