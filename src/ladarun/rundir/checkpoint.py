"""``checkpoint.pt``: the whole state of a run after its last finished iteration."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, DamagedFileError
from .files import atomic_write


def rng_state(generator: Any) -> dict[str, Any]:
    """Every random stream a run draws from, so a resumed run continues exactly."""
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "active_learning": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: Any) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    generator.set_state(state["active_learning"].cpu())


class Checkpoint:
    """``checkpoint.pt`` of a run directory: the state after the last finished iteration.

    ``fingerprint`` identifies the configuration that writes it; loading one written under
    another fingerprint is refused, so a run never continues another run's state.
    """

    def __init__(self, path: Path, fingerprint: Optional[str] = None):
        self.path = Path(path)
        self.fingerprint = fingerprint

    def load(self, device: Any) -> Optional[dict[str, Any]]:
        if not self.path.exists():
            return None
        import torch

        try:
            # weights_only=False: the file holds RNG states (NumPy arrays, tuples); it is our own.
            state = torch.load(self.path, map_location=device, weights_only=False)
            missing = {"iteration", "model", "optimizer", "labeled_at", "rng"} - set(state)
        except Exception as err:  # truncated, empty or not a checkpoint: torch raises many kinds
            raise DamagedFileError(
                f"{self.path} is damaged and cannot be resumed from ({type(err).__name__}: {err}); "
                "delete it to run this configuration again from the start"
            ) from None
        if missing:
            raise DamagedFileError(
                f"{self.path} lacks {', '.join(sorted(missing))}, so it is not a ladarun checkpoint; "
                "delete it to run this configuration again from the start"
            )
        if self.fingerprint is not None and state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"{self.path} was written by a run with a different configuration; resume it with its own "
                "configuration, or choose another directory with hydra.run.dir=... (or delete the checkpoint)"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        with atomic_write(self.path, "wb") as f:
            torch.save({**state, "fingerprint": self.fingerprint}, f)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
