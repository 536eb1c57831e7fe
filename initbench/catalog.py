"""The built-in names without torch or Lightning: what `initbench list` shows and what names are checked against
before any heavy import, so that listing answers at once and a typo is refused at once.

`catalog.json` is generated from the registries themselves (`python -m initbench.catalog` rewrites it) and a test
keeps it equal to them. Names from plug-ins (entry points), from user code registered in this process, and
`package.module:attribute` references are accepted here and checked in full where they are loaded.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError, unknown_name
from initbench.plugins import is_reference
from initbench.syntax import parse_call

PATH = Path(__file__).with_name("catalog.json")
GROUPS = {"init": "initbench.inits", "model": "initbench.models", "dataset": "initbench.datasets"}
# Where each registry lives once imported (user code may have added to it in this process), and its table.
_LIVE = {"init": ("initbench.inits.registry", "_REGISTRY"), "model": ("initbench.models", "_MODELS"),
         "dataset": ("initbench.data.sources", "_LOADERS")}


def _shown(value: Any) -> str:
    import inspect

    return "<required>" if value is inspect.Parameter.empty else str(value)


def build() -> dict[str, Any]:
    """The catalog, read from the registries (imports torch and Lightning)."""
    from initbench.data.sources import _LOADERS
    from initbench.inits import WALK_HELP, list_inits
    from initbench.models import _MODELS, model_params

    inits = [{"name": s.name, "description": s.description, "params": {k: _shown(v) for k, v in s.params.items()}}
             for s in list_inits() if s.source == "builtin"]
    models = []
    for name, cls in sorted(_MODELS.items()):
        params = model_params(name)
        models.append({"name": name, "description": next(iter((cls.__doc__ or "").splitlines()), ""),
                       "params": None if params is None else {k: _shown(v) for k, v in params.items()}})
    return {"inits": inits, "walk_help": dict(WALK_HELP), "models": models, "datasets": sorted(_LOADERS)}


@functools.cache
def load() -> dict[str, Any]:
    return json.loads(PATH.read_text())


def builtin_names(kind: str) -> list[str]:
    entries = load()[kind + "s"]
    return [e if isinstance(e, str) else e["name"] for e in entries]


def plugin_names(kind: str) -> list[str]:
    """Names installed under the kind's entry-point group (read from package metadata; nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=GROUPS[kind])})


def known_names(kind: str) -> set[str]:
    names = {*builtin_names(kind), *plugin_names(kind)}
    module_name, table = _LIVE[kind]
    module = sys.modules.get(module_name)
    if module is not None:  # registered by user code in this process
        names |= set(getattr(module, table))
    return names


def check_name(kind: str, name: str) -> None:
    """Refuse a name that is no built-in, plug-in or registered name, with the valid choices."""
    if is_reference(name):
        return
    known = known_names(kind)
    if name not in known:
        raise unknown_name(kind, name, sorted(known), suggestions=3 if kind == "init" else 2)


def check_init(spec: str | Mapping[str, Any]) -> None:
    """The spec's syntax and every init name in it (the scheme, its fallback and its rules)."""
    name, params = parse_call(spec, "init")
    check_name("init", name)
    fallback = params.get("fallback")
    if isinstance(fallback, str):
        check_init(fallback)
    rules = params.get("rules")
    if isinstance(rules, Mapping):
        for rule in rules.values():
            if isinstance(rule, str | Mapping):
                check_init(rule)


def check_model(spec: str | Mapping[str, Any]) -> None:
    """The spec's syntax, its name and, for a built-in, its parameter names."""
    name, params = parse_call(spec, "model")
    check_name("model", name)
    entry = next((m for m in load()["models"] if m["name"] == name), None)
    valid = None if entry is None else entry["params"]
    if valid is not None:
        unknown = next((k for k in params if k not in valid), None)
        if unknown:
            raise InitbenchError(f"model '{name}' has no parameter '{unknown}'; valid: {', '.join(valid) or 'none'}")


def main() -> None:
    PATH.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
