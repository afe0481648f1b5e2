"""Checks of the report commands' path options, before anything is read or written: each bad
path is one line naming the fix (issue 35: no traceback for a user's mistake)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def runs_folder(path: Path, option: str = "RUNS_DIR") -> Optional[str]:
    """Why ``path`` cannot be searched for runs (None when it can)."""
    if path.is_file():
        return f"{option} {path} is a file; pass the folder that holds the runs (e.g. outputs/)"
    if not path.is_dir():
        return (
            f"{option} {path} is not a folder; pass the folder that holds the runs (e.g. outputs/)"
        )
    return None


def output_folder(path: Path, option: str) -> Optional[str]:
    """Why ``path`` cannot take written files as a folder (a missing one is created)."""
    if path.exists() and not path.is_dir():
        return f"{option} {path} is a file; give a folder (it is created when missing)"
    return None


def output_file(path: Path, option: str) -> Optional[str]:
    """Why ``path`` cannot be written as a file (its folder must exist)."""
    if path.is_dir():
        return f"{option} {path} is a folder; give a file name, e.g. {path / 'picks.csv'}"
    if not path.parent.is_dir():
        return f"{option} {path}: the folder {path.parent} does not exist; create it or give another path"
    return None
