"""The init registry: strategies registered by decorator, by import path or by entry point, and chosen by spec.

A strategy is a plain function that fills one tensor in place, `fn(tensor, **params)`, exactly
like the functions of `torch.nn.init`; its keyword defaults are its parameters, checked here
before any tensor changes.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from initbench.errors import InitbenchError
from initbench.params import WALK_PARAMS, resolve
from initbench.registry import Registry
from initbench.syntax import format_call, parse_call

REQUIRED = inspect.Parameter.empty


class NotApplicable(Exception):
    """Raised by a tensor function for a tensor it cannot fill; the walk then uses the fallback."""


@dataclass(frozen=True)
class Strategy:
    """A registered init scheme: its function, parameter defaults and allowed values."""

    name: str
    fn: Callable[..., Any]
    description: str
    params: dict[str, Any]
    types: dict[str, type | str | None] = field(default_factory=dict)
    choices: dict[str, tuple] = field(default_factory=dict)
    whole_model: bool = False
    walk_defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "builtin"
    check: Callable[[dict[str, Any]], str | None] | None = None  # -> what is wrong with these values, or None

    @property
    def defaults(self) -> dict[str, Any]:
        """Every parameter's default, walk parameters included, in declaration order."""
        return {**self.params, **WALK_PARAMS, **self.walk_defaults}

    def normalise(self, key: str, value: Any) -> Any:
        """One spelling per value: numbers of a float (or any-number) parameter as floats, `1` == `1.0`."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return value if self.types.get(key) is int else float(value)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate user parameters and merge them over the defaults (walk parameters included)."""
        out = resolve(self.name, self.defaults, self.types, self.choices, self.check, given, required=REQUIRED)
        out["rules"] = canonical_rules(out["rules"], self.name)
        return out


@dataclass(frozen=True)
class Sampled:
    """What a tensor function may return: the distribution it drew from (for the manifest) and a note."""

    family: str  # normal | uniform | trunc_normal | orthogonal | constant | identity | sparse_normal
    params: Mapping[str, float] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `distribution`: the family and its parameters."""
        return {"family": self.family, **self.params}


STRATEGIES = Registry("init", suggestions=3)  # name -> Strategy (plug-ins and references: their functions)


def register_init(
    name: str,
    *,
    description: str | None = None,
    choices: Mapping[str, tuple] | None = None,
    whole_model: bool = False,
    walk_defaults: Mapping[str, Any] | None = None,
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(tensor, **params)` as init strategy `name`; keyword defaults are its parameters.

    `check(params)` returns what is wrong with a combination of values (e.g. "needs a < b"), or None;
    it runs whenever a spec is resolved, so bad values are refused before any work.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        STRATEGIES.builtin[name] = _make_strategy(name, fn, description, choices, whole_model, walk_defaults,
                                         source=fn.__module__, check=check)
        return fn

    return decorator


_TYPES = {"float": float, "int": int, "str": str, "bool": bool, float: float, int: int, str: str, bool: bool}
_DEFAULT_TYPES = {float: "number", int: "number", str: str, bool: bool}


def _make_strategy(
    name: str,
    fn: Callable[..., Any],
    description: str | None = None,
    choices: Mapping[str, tuple] | None = None,
    whole_model: bool = False,
    walk_defaults: Mapping[str, Any] | None = None,
    source: str = "builtin",
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Strategy:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise InitbenchError(f"init '{name}': cannot read the signature of {fn!r}") from None
    skip = 3 if whole_model else 1  # (model, data, walk) or (tensor)
    own = [p for p in list(sig.parameters.values())[skip:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    params = {p.name: p.default for p in own}
    # The type comes from the annotation, else from the default (None and required say nothing;
    # an unannotated number, like torch.nn.init's `gain=1`, takes any number).
    types = {p.name: _TYPES.get(p.annotation) or _DEFAULT_TYPES.get(type(p.default)) for p in own}
    doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
    return Strategy(name, fn, doc, params, types, dict(choices or {}), whole_model, dict(walk_defaults or {}),
                    "builtin" if source.startswith("initbench.inits.") else source, check)


def broken_plugins() -> dict[str, str]:
    """Init plug-ins whose entry point failed to load: name -> the error."""
    return dict(STRATEGIES.plugins()[1])


def list_inits(pattern: str = "*") -> list[Strategy]:
    """The registered strategies (built-in and entry points) whose name matches an fnmatch pattern."""
    return [get_strategy(n) for n in STRATEGIES.all() if fnmatch.fnmatch(n, pattern)]


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by registered name, entry point, or import it from `package.module:function`."""
    obj, source = STRATEGIES.find(name)
    if isinstance(obj, Strategy):
        return obj
    if source == name and not callable(obj):  # a reference
        raise InitbenchError(f"init '{name}' is not a function")
    if name not in _PLUGINS:
        _PLUGINS[name] = _make_strategy(name, obj, source=source)
    return _PLUGINS[name]


_PLUGINS: dict[str, Strategy] = {}  # entry points and references made into strategies, once per process


# ---------------------------------------------------------------- choosing an init by name

@dataclass(frozen=True)
class InitSpec:
    """An init chosen by name with parameters, e.g. `kaiming_normal(mode=fan_out)`."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return format_call(self.name, self.params)


def parse_init(spec: str | Mapping[str, Any] | InitSpec) -> InitSpec:
    """Parse `NAME`, `NAME(key=value, ...)` or a YAML mapping `{name: NAME, key: value}`."""
    if isinstance(spec, InitSpec):
        return spec
    name, params = parse_call(spec, "init")
    if "rules" in params:
        params["rules"] = canonical_rules(params["rules"], name)
    return InitSpec(name, params)


def canonical_rules(rules: Any, name: str) -> dict[str, str] | None:
    """Per-parameter rules as {fnmatch pattern: canonical spec string}, in their given (first-match) order."""
    if rules is None or rules == {}:
        return None
    if not isinstance(rules, Mapping):
        raise InitbenchError(f"parameter 'rules' of init '{name}' must be a mapping {{PATTERN: SPEC}}, got {rules!r}")
    out = {}
    for pattern, rule in rules.items():
        if not isinstance(pattern, str) or not pattern:
            raise InitbenchError(f"a rule of init '{name}' needs a parameter-name pattern, got {pattern!r}")
        out[pattern] = "keep" if rule == "keep" else str(parse_init(rule))
    return out
