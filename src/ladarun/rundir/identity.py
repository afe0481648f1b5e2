"""A run's identity: the folder its settings name, and the guard that keeps a new run off the
finished results of another configuration (or lets an earlier one resume)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from ..errors import ConfigError, DamagedFileError, UnsafePathError
from .files import CHECKPOINT, RUN_CONFIG, SUMMARY, read_json

# Config keys that may differ between two invocations of the same run: where data (and the cached
# embedding) live, the progress bar, checkpointing, and the labels of the Table 1 row or sweep
# preset that chose it.
OPERATIONAL_KEYS = (
    "data_dir",
    "embedding_cache",
    "progress",
    "checkpoint",
    "keep_checkpoint",
    "method",
    "experiment",
    "logger",
)
# ``aux`` holds a protocol's budgets for auxiliary networks; an option that uses one copies the
# value into its own node (acquisition.steps: ${aux.vaal_steps}), where the comparison sees it.
# Comparing ``aux`` itself would make a change of VAAL's budget refuse every finished row.
INDIRECT_KEYS = ("aux",)

# Overrides already named by a run directory's fixed part: <dataset>/<acquisition>-<augment>/seed<seed>.
NAMED_KEYS = ("dataset", "acquisition", "augment", "seed")
# A variant name longer than this keeps a readable head and ends in a hash of the whole.
MAX_VARIANT_CHARS = 80


# A name that becomes one folder of a run's path: no separators, no "." or "..", nothing hidden.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,@-]*")


def folder_name(name: Any, key: str = "a config name") -> str:
    """``name`` when it is safe as one folder of a run's path, else UnsafePathError naming it:
    ``dataset.name=../../x`` must not put a run outside the sweep folder."""
    text = str(name)
    if not _FOLDER_NAME.fullmatch(text) or ".." in text:
        raise UnsafePathError(
            f"{key}={text!r} cannot name a run folder (it would leave the outputs folder or hide "
            "it); use letters, digits and _ . + = , @ - only, starting with a letter or digit"
        )
    return text


def run_variant(overrides: Iterable[str]) -> str:
    """The folder (with a trailing "/") that keeps a run's non-default settings apart, or "".

    ``overrides`` are the run's command-line overrides (Hydra's ``hydra.overrides.task``). Those
    the fixed part of the path already names (dataset, acquisition, augment and seed options) and
    those that never change results (OPERATIONAL_KEYS: data_dir, progress, method, experiment...)
    are left out; the rest, sorted, name the folder: ``protocol.lr=0.001,protocol.epochs=5/``. So
    every setting a sweep varies lands in its own folder, the same command always lands in the
    same one, and a sweep preset with no other overrides keeps the plain layout. A name over
    MAX_VARIANT_CHARS characters keeps the settings that fit, then "+N" (how many more) and an
    8-character hash of the whole: ``protocol.epochs=2,protocol.iterations=40,+3-b34e795c/``.
    """
    kept = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        name = key.lstrip("+~").split("@")[0]
        top = name.split(".")[0].split("/")[0]
        if name in NAMED_KEYS or top in OPERATIONAL_KEYS or top == "hydra":
            continue
        kept.append(f"{key}={value}" if sep else key)  # "~key" (a deletion) has no value
    if not kept:
        return ""
    # "/" would nest folders; spaces and quotes make paths awkward in shells.
    items = [re.sub(r"[/\\\s'\"]+", "_", item) for item in sorted(kept)]
    text = ",".join(items)
    if len(text) > MAX_VARIANT_CHARS:
        # Whole settings while they fit, then how many more and a hash of them all.
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        head: list[str] = []
        for item in items:
            if len(",".join(head + [item])) > MAX_VARIANT_CHARS - 20:
                break
            head.append(item)
        text = ",".join(head + [f"+{len(items) - len(head)}-{digest}"])
    return text + "/"


# --- guarding a run directory ---------------------------------------------------------------
def comparable(config: dict) -> dict:
    """``config`` without the keys that do not change what a run measures."""
    return {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS + INDIRECT_KEYS}


def fingerprint(config: dict) -> str:
    """A hash of everything in ``config`` that changes a run's results."""
    return hashlib.sha256(
        json.dumps(comparable(config), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


_REDO = "delete it (and the run's other files) to run this configuration again"


def _previous_config(out_dir: Path) -> Optional[dict]:
    """The config of the run already in ``out_dir`` (finished or resumable), if any."""
    summary_path = out_dir / SUMMARY
    if summary_path.exists():
        run = read_json(summary_path, _REDO).get("run")
        config = run.get("config") if isinstance(run, dict) else None
        if not isinstance(config, dict) or not config:
            raise DamagedFileError(
                f"{summary_path} holds no run config (run.config), so it is not a whole ladarun "
                f"summary; {_REDO}"
            )
        return config
    if (out_dir / CHECKPOINT).exists() and (out_dir / RUN_CONFIG).exists():
        # The checkpoint's fingerprint still guards the resume without it.
        return read_json(out_dir / RUN_CONFIG, "delete it: the run resumes and writes it again")
    return None


Defaults = Callable[[], Mapping[str, Any]]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b.c": value}."""
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differences(before: dict, now: dict, defaults: Optional[Defaults] = None) -> list[str]:
    """The dotted keys in which two configs differ in what a run measures.

    A key that ``before`` lacks, set in ``now`` to its package default (``defaults()``: the
    unresolved config ladarun composes for these choices), is no difference: the key was added
    to ladarun after the earlier run, and a new key's default keeps the behaviour from before it.
    So finished runs stay finished, and unfinished ones resume, across such additions.
    """
    b, n = flatten(comparable(before)), flatten(comparable(now))
    changed = [k for k in sorted(set(b) | set(n)) if k not in b or k not in n or b[k] != n[k]]
    if defaults is None or not any(k not in b for k in changed):
        return changed
    d = flatten(defaults())
    return [k for k in changed if not (k not in b and k in n and k in d and d[k] == n[k])]


def run_fingerprint(out_dir: Path, config: dict, defaults: Optional[Defaults] = None) -> str:
    """The fingerprint a run of ``config`` in ``out_dir`` saves and checks its checkpoint with:
    the earlier run's when it is the same run under keys added since (``differences``), so its
    checkpoint still resumes; otherwise ``fingerprint(config)``."""
    previous = _previous_config(out_dir)
    if previous is not None and comparable(previous) != comparable(config):
        if not differences(previous, config, defaults):
            return fingerprint(previous)
    return fingerprint(config)


def check_existing(
    out_dir: Path, config: dict, defaults: Optional[Defaults] = None
) -> Optional[float]:
    """Guard what ``out_dir`` already holds before a run starts there.

    Returns the best accuracy of a finished run of this same config (the caller skips it),
    or None when the run should start or resume. Raises ConfigError when ``out_dir`` holds a
    finished or resumable run of a *different* config, so a new run never overwrites results.
    Keys added to ladarun since the earlier run, at their defaults, are no difference
    (``differences``). Nothing in ``out_dir`` is written.
    """
    previous = _previous_config(out_dir)
    if previous is None:
        return None
    changed = differences(previous, config, defaults)
    if not changed:
        summary_path = out_dir / SUMMARY
        if not summary_path.exists():
            return None
        best = read_json(summary_path, _REDO).get("best_acc")
        if not isinstance(best, (int, float)):
            raise DamagedFileError(f"{summary_path} has no best_acc; {_REDO}")
        return float(best)
    state = "finished" if (out_dir / SUMMARY).exists() else "resumable (unfinished)"
    raise ConfigError(
        f"{out_dir} already holds a {state} run with a different configuration (differs in: {', '.join(changed)}); "
        "choose another directory with hydra.run.dir=... or move the old run away"
    )
