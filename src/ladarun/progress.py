"""Progress bars inside the long phases of an iteration (training epochs, policy training, VAAL's
and BGADL's adversarial steps), on or off with the run's ``progress`` option.

A bar appears only once its phase has lasted ``DELAY`` seconds, so the many short phases of a
small run print nothing, and it disappears when the phase ends (the iteration bar and the
per-iteration log line stay).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

DELAY = 3.0  # seconds before a phase's bar is drawn
_enabled = False  # set by bars() for the duration of a run


@contextlib.contextmanager
def bars(enabled: bool) -> Iterator[None]:
    """Phase bars on (``enabled``) or off until the block ends; the loop wraps a run in it."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before


def phase(iterable: Iterable[T], desc: str, total: Optional[int] = None) -> Iterable[T]:
    """``iterable`` with a transient progress bar named ``desc`` (when bars are on)."""
    if not _enabled:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, delay=DELAY, unit="step")
