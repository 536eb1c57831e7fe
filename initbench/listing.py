"""`initbench list`: the init strategies, models and datasets, from the catalog (no torch, no Lightning); plug-ins,
when any are installed, are loaded to show them."""

from __future__ import annotations

import fnmatch

from initbench import registry
from initbench.errors import InitbenchError


def show(what: str, pattern: str = "*") -> None:
    """Print the inits matching `pattern` (fnmatch), the models or the datasets."""
    if what == "inits":
        _inits(pattern)
    elif what == "models":
        _models()
    else:
        _datasets()


def _inits(pattern: str) -> None:
    entries = [dict(e, source="builtin") for e in registry.catalog()["inits"]]
    broken: list[str] = []
    if registry.plugin_names("init"):
        from initbench.inits import REQUIRED, broken_plugins, list_inits

        entries += [{"name": s.name, "description": s.description, "source": s.source,
                     "params": {k: "<required>" if v is REQUIRED else str(v) for k, v in s.params.items()}}
                    for s in list_inits() if s.source != "builtin"]
        broken = list(broken_plugins().values())
    entries.sort(key=lambda e: e["name"])
    shown = [e for e in entries if fnmatch.fnmatch(e["name"], pattern)]
    if not shown:
        raise InitbenchError(f"no init matches {pattern!r}; valid: {', '.join(e['name'] for e in entries)}")
    for e in shown:
        origin = "" if e["source"] == "builtin" else f"  [{e['source']}]"
        print(f"{e['name']:<18} {e['description']}{origin}")
        if e["params"]:
            print(f"{'':<18}   params: {', '.join(f'{k}={v}' for k, v in e['params'].items())}")
    for error in broken:
        print(f"(unusable) {error}")
    print("\nevery init also takes:")
    for key, help_ in registry.catalog()["walk_help"].items():
        print(f"  {key:<9} {help_}")
    print("spec syntax: NAME or NAME(key=value, ...), e.g. 'kaiming_normal(mode=fan_out, nonlinearity=relu)'")
    print("             or package.module:function (a function that fills a tensor in place)")


def _models() -> None:
    entries = {e["name"]: (e["description"], e["params"]) for e in registry.catalog()["models"]}
    problems: dict[str, str] = {}
    if registry.plugin_names("model"):
        from initbench.models import list_models, model_params

        for name, cls in list_models().items():
            if name not in entries:
                try:
                    given = model_params(name)
                except InitbenchError as exc:  # one unusable plug-in must not hide the others
                    problems[name] = str(exc)
                    continue
                entries[name] = (next(iter((cls.__doc__ or "").splitlines()), ""),
                                 None if given is None else {k: str(v) for k, v in given.items()})
    for name in sorted({*entries, *problems}):
        if name in problems:
            print(f"{name:<12} (unusable) {problems[name]}")
            continue
        doc, given = entries[name]
        params = "any keyword" if given is None else ", ".join(f"{k}={v}" for k, v in given.items())
        print(f"{name:<12} {doc}\n{'':<12}   params: {params}")
    print("\nyour own: --model package.module:build, a callable (input_shape, num_classes, **params) -> nn.Module")


def _datasets() -> None:
    print("\n".join(sorted({*registry.builtin_names("dataset"), *registry.plugin_names("dataset")})))
    print("\nyour own: --dataset package.module:load, returning (x_train, y_train, x_test, y_test) or "
          "(train, test) datasets")
