"""ladarun: a config-driven runner for LADA and the deep active-learning baselines of its Table 1.

From Python::

    import ladarun
    result = ladarun.run(["dataset=synthetic", "protocol=smoke"])  # like `ladarun dataset=...`
    result.best_acc, result.metrics, result.dir
    frame = ladarun.load_runs("outputs")  # every run under a folder, one row per iteration

``import ladarun`` stays light: the API (Hydra, pandas) loads on first use, torch when a run
starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import RunResult, load_runs, run

__all__ = ["RunResult", "__version__", "load_runs", "run"]
_API = {"RunResult", "load_runs", "run"}


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use (PEP 562)."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ladarun' has no attribute {name!r}")
