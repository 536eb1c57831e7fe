"""The user's own code: `package.module:attribute` references and entry-point groups, with one-line errors.

Inits, models and datasets can all come from outside initbench, either by import path on the command
line or from an installed package's entry points (`initbench.inits`, `initbench.models`,
`initbench.datasets`). A broken plug-in is reported by name when it is asked for; it never hides the
others or the built-ins.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from initbench.errors import InitbenchError, unknown_name

_GROUPS: dict[str, tuple[dict[str, tuple[Any, str]], dict[str, str]]] = {}


def is_reference(name: str) -> bool:
    """Whether a name is a `package.module:attribute` reference rather than a registered name."""
    return ":" in name


def import_reference(ref: str, what: str) -> Any:
    """The object `package.module:attribute` names; a missing module or attribute is one clear error."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InitbenchError(f"{what} '{ref}' must be written package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InitbenchError(f"cannot import '{module_name}' for {what} '{ref}': {reason}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InitbenchError(f"module '{module_name}' has no attribute '{attr}' ({what} '{ref}')")
        obj = getattr(obj, part)
    return obj


def entry_point_group(group: str) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
    """({name: (object, "pkg.mod:attr")}, {name: load error}) of an entry-point group; loaded once per process.

    Every entry point is tried: one that fails to import is kept as its error message, so the
    others still load and the failure is reported when (and only when) that name is used.
    """
    if group not in _GROUPS:
        loaded: dict[str, tuple[Any, str]] = {}
        broken: dict[str, str] = {}
        for ep in entry_points(group=group):
            try:
                loaded[ep.name] = (ep.load(), ep.value)
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                broken[ep.name] = f"plug-in '{ep.name}' ({ep.value}, group {group}) failed to load: {reason}"
        _GROUPS[group] = (loaded, broken)
    return _GROUPS[group]


def find(name: str, what: str, group: str, builtin: Mapping[str, Any]) -> Any:
    """A built-in by name, the object a `package.module:attribute` reference names, or an entry point of `group`."""
    if name in builtin:
        return builtin[name]
    if is_reference(name):
        return import_reference(name, what)
    loaded, broken = entry_point_group(group)
    if name in loaded:
        return loaded[name][0]
    if name in broken:
        raise InitbenchError(broken[name])
    raise unknown_name(what, name, sorted({*builtin, *loaded}))
