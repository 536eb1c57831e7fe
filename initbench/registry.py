"""Names -> objects, one shape for inits, models and datasets: built-ins registered by decorator, the entry points of
an installed package (`initbench.inits`, `initbench.models`, `initbench.datasets`), and `package.module:attribute`
references. A broken plug-in is reported by name when it is asked for; it never hides the others or the built-ins.

The built-in names are also kept in `catalog.json`, a snapshot of the registries (`python -m initbench.catalog`
rewrites it; a test keeps it equal to them), so that a name is checked, and `initbench list` answers, before torch
loads. This module stays light: no torch at import.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError, unknown_name
from initbench.syntax import parse_call

CATALOG = Path(__file__).with_name("catalog.json")
KINDS = ("init", "model", "dataset")


class Registry:
    """The registered objects of one kind. `register(name)` is a decorator; `find(name)` looks a name up among the
    built-ins, then as a `package.module:attribute` reference, then among the kind's entry points."""

    def __init__(self, kind: str, suggestions: int = 2) -> None:
        self.kind, self.group, self.suggestions = kind, f"initbench.{kind}s", suggestions
        self.builtin: dict[str, Any] = {}
        REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            self.builtin[name] = obj
            return obj

        return decorator

    def plugins(self) -> tuple[dict[str, tuple[Any, str]], dict[str, str]]:
        """({name: (object, "pkg.mod:attr")}, {name: load error}) of the kind's entry points, loaded once."""
        return entry_point_group(self.group)

    def all(self) -> dict[str, Any]:
        """Built-ins and the plug-ins that loaded, by name."""
        loaded = {name: obj for name, (obj, _) in self.plugins()[0].items() if name not in self.builtin}
        return dict(sorted({**self.builtin, **loaded}.items()))

    def find(self, name: str) -> tuple[Any, str]:
        """(the object, where it comes from: `builtin`, the entry point's value or the reference itself)."""
        if name in self.builtin:
            return self.builtin[name], "builtin"
        if is_reference(name):
            return import_reference(name, self.kind), name
        loaded, broken = self.plugins()
        if name in loaded:
            return loaded[name]
        if name in broken:
            raise InitbenchError(broken[name])
        raise unknown_name(self.kind, name, sorted({*self.builtin, *loaded}), suggestions=self.suggestions)


REGISTRIES: dict[str, Registry] = {}  # kind -> its registry, once the module that fills it is imported


def is_reference(name: str) -> bool:
    """Whether a name is a `package.module:attribute` reference rather than a registered name."""
    return ":" in name


def import_reference(ref: str, what: str) -> Any:
    """The object `package.module:attribute` names; a missing module or attribute is one clear error."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InitbenchError(f"{what} '{ref}' must be written package.module:attribute")
    if "" not in sys.path and os.getcwd() not in sys.path:  # the user's package in the working folder, as
        sys.path.append(os.getcwd())  # `python -m` finds it (appended: an installed package keeps precedence)
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


_GROUPS: dict[str, tuple[dict[str, tuple[Any, str]], dict[str, str]]] = {}


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


# ---------------------------------------------------------------- names checked from the snapshot, before torch

@functools.cache
def catalog() -> dict[str, Any]:
    """The snapshot: built-in inits (with their parameters), the walk's parameters, models (with theirs), datasets."""
    return json.loads(CATALOG.read_text())


def builtin_names(kind: str) -> list[str]:
    return [e if isinstance(e, str) else e["name"] for e in catalog()[kind + "s"]]


def plugin_names(kind: str) -> list[str]:
    """Names installed under the kind's entry-point group (read from package metadata; nothing is imported)."""
    return list(_plugin_names(kind, tuple(sys.path)))


@functools.lru_cache(maxsize=64)
def _plugin_names(kind: str, path: tuple[str, ...]) -> list[str]:
    """Read once per search path: the report checks every record's names, a sweep every run's."""
    return sorted({ep.name for ep in entry_points(group=f"initbench.{kind}s")})


def known_names(kind: str) -> set[str]:
    names = {*builtin_names(kind), *plugin_names(kind)}
    if kind in REGISTRIES:  # registered by user code in this process
        names |= set(REGISTRIES[kind].builtin)
    return names


def check_name(kind: str, name: str) -> None:
    """Refuse a name that is no built-in, plug-in or registered name, with the valid choices."""
    if is_reference(name):
        return
    known = known_names(kind)
    if name not in known and kind == "dataset" and ("/" in name or os.sep in name or os.path.exists(name)):
        raise InitbenchError(f"dataset '{name}' is a path, not a dataset name ({', '.join(sorted(known))}); to "
                             "train on your own data, give package.module:load, a function in your code that returns "
                             "(x_train, y_train, x_test, y_test) arrays or (train, test) datasets")
    if name not in known:
        raise unknown_name(kind, name, sorted(known), suggestions=3 if kind == "init" else 2)


def check_init(spec: str | Mapping[str, Any]) -> None:
    """The spec's syntax, every init name in it (the scheme, its fallback and its rules) and a built-in's parameters
    (names, types, choices and ranges)."""
    name, params = parse_call(spec, "init")
    check_name("init", name)
    entry = next((i for i in catalog()["inits"] if i["name"] == name), None)
    if entry is not None:  # a built-in's parameters, names and values, by the rules the strategy itself applies
        from initbench.params import resolve, rules_from

        check = entry["check"]
        types = {k: {"float": float, "int": int, "str": str, "bool": bool}.get(t, t) for k, t in check["types"].items()}
        resolve(name, check["defaults"], types, {k: tuple(v) for k, v in check["choices"].items()},
                rules_from(check["rules"]), params)
    fallback = params.get("fallback")
    if isinstance(fallback, str):
        _within(f"fallback of init '{name}'", fallback)
    rules = params.get("rules")
    if isinstance(rules, Mapping):
        for pattern, rule in rules.items():
            if isinstance(rule, str | Mapping) and rule != "keep":
                _within(f"rule '{pattern}' of init '{name}'", rule)


def _within(where: str, spec: str | Mapping[str, Any]) -> None:
    """A nested init's check, its complaint prefixed by where it sits (the words the walk uses)."""
    try:
        check_init(spec)
    except InitbenchError as error:
        raise InitbenchError(f"{where}: {error}") from None


# the built-ins' layer widths (a positive int or a list of them) and sizes (one positive int)
WIDTHS = {"mlp": ("hidden",), "simplecnn": ("channels", "fc")}
SIZES = {"mlp": ("depth", "width"), "convnet": ("depth", "channels"), "resnet": ("depth", "width"),
         "vit": ("depth", "width", "heads", "patch")}


def check_model(spec: str | Mapping[str, Any]) -> None:
    """The spec's syntax, its name and, for a built-in, its parameter names and layer widths."""
    name, params = parse_call(spec, "model")
    check_name("model", name)
    entry = next((m for m in catalog()["models"] if m["name"] == name), None)
    check_model_params(name, params, None if entry is None else entry["params"])
    for key in WIDTHS.get(name, ()) if entry is not None else ():
        if key in params:
            check_widths(name, key, params[key])
    for key in SIZES.get(name, ()) if entry is not None else ():
        if params.get(key) is not None:
            check_size(name, key, params[key])


def check_widths(model: str, key: str, widths: Any) -> list[int]:
    """A built-in model's layer widths: a positive integer or a list of them (a zero-width layer trains nothing)."""
    given = [widths] if isinstance(widths, int) and not isinstance(widths, bool) else widths
    if not isinstance(given, list | tuple) or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                                      for w in given):
        raise InitbenchError(f"model '{model}': {key} must be a list of positive integers, got {widths!r}")
    return list(given)


def check_size(model: str, key: str, value: Any) -> int:
    """A built-in model's depth, width, heads or patch: one positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InitbenchError(f"model '{model}': {key} must be a positive integer, got {value!r}")
    return value


def check_model_params(name: str, params: Mapping[str, Any], valid: Mapping[str, Any] | None) -> None:
    """Every parameter given is one the model takes (`valid`: its parameters; None: it takes any keyword)."""
    unknown = next((k for k in params if valid is not None and k not in valid), None)
    if unknown:
        raise InitbenchError(f"model '{name}' has no parameter '{unknown}'; valid: {', '.join(valid) or 'none'}")
