"""`catalog.json`, the snapshot of the registries' built-in names that `initbench.registry` checks names against
before torch loads: `python -m initbench.catalog` rewrites it from the registries themselves (a test keeps the two
equal)."""

from __future__ import annotations

import inspect
import json
from typing import Any

from initbench.params import REQUIRED
from initbench.registry import CATALOG

_TYPE_NAMES = {float: "float", int: "int", str: "str", bool: "bool"}


def _shown(value: Any) -> str:
    return "<required>" if value is inspect.Parameter.empty else str(value)


def build() -> dict[str, Any]:
    """The catalog, read from the registries (imports torch and Lightning)."""
    from initbench.data import DATASETS
    from initbench.inits import WALK_HELP, list_inits
    from initbench.models import MODELS, model_params

    inits = [{"name": s.name, "description": s.description, "params": {k: _shown(v) for k, v in s.params.items()},
              "check": {"defaults": {k: REQUIRED if v is inspect.Parameter.empty else v for k, v in s.defaults.items()},
                        "types": {k: _TYPE_NAMES.get(t, t) for k, t in s.types.items()},
                        "choices": {k: list(v) for k, v in s.choices.items()},
                        "rules": s.check.as_list() if s.check else []}}
             for s in list_inits() if s.source == "builtin"]
    models = []
    for name, cls in sorted(MODELS.builtin.items()):
        params = model_params(name)
        models.append({"name": name, "description": next(iter((cls.__doc__ or "").splitlines()), ""),
                       "params": None if params is None else {k: _shown(v) for k, v in params.items()}})
    return {"inits": inits, "walk_help": dict(WALK_HELP), "models": models, "datasets": sorted(DATASETS.builtin)}


def main() -> None:
    CATALOG.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {CATALOG}")


if __name__ == "__main__":
    main()
