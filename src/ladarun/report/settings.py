"""Which setting a run belongs to: the protocol section it is tabled in, and whether it is a
row's default setting or an ablation of it (a row run with augment.tau_activation=softplus).

Runs of different protocols (or models) go to different sections and are never averaged
together; a section's heading names every protocol value that differs from its preset. A row
run under several settings keeps its plain label for the package's default setting; its other
settings are ablations, labelled with their non-default values.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from ..conf import CONF_DIR
from .runs import Run, flatten, protocol_defaults


def canonical(obj: Any) -> str:
    """A canonical text of a config value, to compare and group settings by."""
    return json.dumps(obj, sort_keys=True, default=str)


def _value(v: Any) -> str:
    """A config value as it is written on the command line (null, true, 0.001)."""
    return json.dumps(v) if v is None or isinstance(v, bool) else str(v)


def _preset_protocol(name: str) -> Optional[dict[str, Any]]:
    """The protocol values of conf/protocol/<name>.yaml (over protocol_defaults.yaml); None when
    the package has no such preset (a protocol from another config folder)."""
    if not (CONF_DIR / "protocol" / f"{name}.yaml").is_file():
        return None
    return protocol_defaults(name) or None


def section_headings(name: str, group: dict[str, dict]) -> dict[str, str]:
    """The heading of each setting (protocol values and model) run under protocol ``name``.

    A heading names every protocol value that differs from the preset, so a section of runs made
    with protocol.iterations=10 reads "Protocol quick (iterations=10), model cnn". A key the run's
    config lacks (written before the key existed) counts as the preset's. Settings that the
    preset cannot tell apart (no such preset in conf/, or keys the preset lacks) are told apart by
    the values in which they differ from each other.
    """
    preset = _preset_protocol(name)
    protocols = {sid: s["protocol"] for sid, s in group.items()}

    def changed(sid: str, keys: Sequence[str]) -> list[str]:
        p = protocols[sid]
        return [
            k
            for k in keys
            if k in p and (preset is None or canonical(p[k]) != canonical(preset.get(k)))
        ]

    def heading(sid: str, keys: list[str]) -> str:
        values = ", ".join(f"{k}={_value(protocols[sid].get(k))}" for k in keys)
        return (
            f"Protocol {name}"
            + (f" ({values})" if values else "")
            + f", model {group[sid]['model']}"
        )

    order = [k for k in (preset or {}) if k != "name"]
    order += sorted({k for p in protocols.values() for k in p} - set(order) - {"name"})
    keys = {sid: changed(sid, order) for sid in group} if preset is not None else {}
    if preset is None or len({heading(sid, keys[sid]) for sid in group}) < len(group):
        differing = [k for k in order if len({canonical(p.get(k)) for p in protocols.values()}) > 1]
        keys = {
            sid: sorted(set(keys.get(sid, [])) | set(differing), key=order.index) for sid in group
        }
    return {sid: heading(sid, keys[sid]) for sid in group}


def normalized(run: Run) -> dict[str, Any]:
    """The run's details, flattened, with the package defaults filled in where its config lacks a key
    (a run written before the key existed) and a resolved default (VAAL's ``steps: 100``, from
    summary.json) written as the unresolved one (``${aux.vaal_steps}``, from .hydra/config.yaml),
    so runs of one setting compare equal whichever file their config came from."""
    unresolved, resolved = run.default_details
    out = dict(unresolved)
    for k, v in flatten(run.details).items():
        default = k in unresolved and canonical(v) in (
            canonical(unresolved[k]),
            canonical(resolved.get(k)),
        )
        out[k] = unresolved[k] if default else v
    return out


def variants(
    settings: dict[str, dict[str, Any]], defaults: dict[str, Any]
) -> dict[str, tuple[str, bool]]:
    """(label suffix, is an ablation) of each of a cell's settings (flat details).

    One setting: the row itself, whatever its values. Several: the keys in which they differ; the
    setting whose differing keys all hold the package default (or are absent where conf/ has no
    such key) is the row and keeps the plain label, each other one is an ablation labelled with
    its non-default values."""
    if len(settings) < 2:
        return {k: ("", False) for k in settings}
    keys = sorted(set().union(*settings.values()))
    differing = [key for key in keys if len({canonical(f.get(key)) for f in settings.values()}) > 1]
    out = {}
    for k, f in settings.items():
        changed = [
            key
            for key in differing
            if (key in f or key in defaults)
            and not (key in defaults and key in f and canonical(f[key]) == canonical(defaults[key]))
        ]
        out[k] = (", ".join(f"{key}={f.get(key)}" for key in changed), bool(changed))
    return out
