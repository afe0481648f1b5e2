"""``checkpoint.pt``: the whole state of a run after its last finished iteration."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, DamagedFileError
from .files import atomic_write


def rng_state(generator: Any, device: Any) -> dict[str, Any]:
    """Every random stream a run draws from, so a resumed run continues exactly. Only tensors,
    numbers, strings and tuples, so that a safe reader loads it (NumPy's key array goes as a
    tensor); the CUDA streams only for a run on the GPU (reading them initialises CUDA)."""
    import torch

    name, keys, *rest = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.array(keys)), *rest),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.device(device).type == "cuda" else [],
        "active_learning": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: Any) -> None:
    import torch

    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else keys
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    generator.set_state(state["active_learning"].cpu())


# What a checkpoint of ladarun < 0.4 needs beyond weights_only's defaults: NumPy arrays.
_NUMPY_ARRAYS: list[Any] = [
    (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct,  # NumPy 2 / 1
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
]


def _steps_to_cpu(node: Any) -> None:
    """Put every optimizer state's ``step`` counter back on the CPU, in place: loading with
    map_location moves it to the GPU, and Adam then reads it with .item() at every step, one
    device sync per parameter (torch keeps ``step`` on the CPU for that reason)."""
    import torch

    if isinstance(node, dict):
        for key, value in node.items():
            if key == "step" and isinstance(value, torch.Tensor) and value.dim() == 0:
                node[key] = value.cpu()
            else:
                _steps_to_cpu(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _steps_to_cpu(value)


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
            # A safe reader: tensors, numbers, strings and containers only (no code can run
            # from a crafted file). NumPy arrays are allowed for checkpoints of ladarun < 0.4,
            # whose NumPy RNG state was an array.
            with torch.serialization.safe_globals(_NUMPY_ARRAYS):
                state = torch.load(self.path, map_location=device, weights_only=True)
            missing = {"iteration", "model", "optimizer", "labeled_at", "rng"} - set(state)
        except Exception as err:  # truncated, empty or not a checkpoint: torch raises many kinds
            raise DamagedFileError(
                f"{self.path} is damaged and cannot be resumed from ({type(err).__name__}: {err}); "
                "delete it to run this configuration again from the start"
            ) from None
        _steps_to_cpu(state)
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
