"""An init's parameters checked without torch: their types, choices and valid ranges.

The same code checks a spec before torch loads (from `catalog.json`, for the built-ins) and when a strategy
resolves it (`inits.registry.Strategy.resolve`), so a value is refused in 0.1 s with the words the strategy
itself would use. A range is a declarative rule (`AtLeast`, `Ordered`, `Within`), so the catalog can store it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from initbench.errors import InitbenchError

# The activations a gain can be named by (torch.nn.init.calculate_gain's, then those with He et al.'s rule).
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                  "sigmoid", "tanh", "relu", "leaky_relu", "selu",
                  "gelu", "silu", "elu", "mish", "softplus", "hardswish")
# PyTorch's own default for Linear/Conv weights: kaiming_uniform_(a=sqrt(5)).
DEFAULT_FALLBACK = "kaiming_uniform(a=2.23606797749979, nonlinearity=leaky_relu)"
# Parameters every strategy accepts: they steer the walk, not the tensor function.
WALK_PARAMS: dict[str, Any] = {"bias": "zeros", "norm": "ones", "fallback": DEFAULT_FALLBACK, "blocks": "split",
                               "fans": "signal", "rules": None}
WALK_HELP = {
    "bias": "zeros | keep | <number>: what biases get",
    "norm": "ones | keep: norm layers to weight 1 / bias 0, or left as they are",
    "fallback": "scheme for tensors this one does not fit",
    "blocks": "split | packed: RNN gates and attention q/k/v one block at a time, or as one packed matrix (PyTorch)",
    "fans": "signal | torch: transposed/grouped conv fans that follow the signal, or PyTorch's convention",
    "rules": "{PATTERN: SPEC, ...}: parameters whose name matches PATTERN (fnmatch, first match wins) get SPEC",
}
WALK_CHOICES = {"norm": ("ones", "keep"), "blocks": ("split", "packed"), "fans": ("signal", "torch")}
REQUIRED = "<required>"  # a parameter without a default, as the catalog stores it

Check = Callable[[dict[str, Any]], "str | None"]  # -> what is wrong with these values, or None


@dataclass(frozen=True)
class AtLeast:
    """`key >= low` (`> low` when strict); a named gain passes."""

    key: str
    low: float
    strict: bool = False

    def __call__(self, p: dict[str, Any]) -> str | None:
        value = p[self.key]
        if isinstance(value, str):
            return None
        bad = value <= self.low if self.strict else value < self.low
        return f"{self.key} must be {'>' if self.strict else '>='} {self.low:g}, got {value!r}" if bad else None


@dataclass(frozen=True)
class Within:
    """`low <= key < high`."""

    key: str
    low: float
    high: float

    def __call__(self, p: dict[str, Any]) -> str | None:
        value = p[self.key]
        ok = self.low <= value < self.high
        return None if ok else f"{self.key} must be in [{self.low:g}, {self.high:g}), got {value!r}"


@dataclass(frozen=True)
class Ordered:
    """`low < high`, two parameters."""

    low: str
    high: str

    def __call__(self, p: dict[str, Any]) -> str | None:
        if p[self.low] < p[self.high]:
            return None
        return f"needs {self.low} < {self.high}, got {self.low}={p[self.low]!r}, {self.high}={p[self.high]!r}"


RULES = {"AtLeast": AtLeast, "Ordered": Ordered, "Within": Within}


@dataclass(frozen=True)
class All:
    """Every rule, the first complaint wins."""

    rules: tuple[Any, ...]

    def __call__(self, p: dict[str, Any]) -> str | None:
        return next((m for rule in self.rules if (m := rule(p))), None)

    def as_list(self) -> list[dict[str, Any]]:
        """The rules as the catalog stores them."""
        return [{"rule": type(r).__name__, **asdict(r)} for r in self.rules]


def rules(*given: Any) -> All:
    """The rules a strategy declares (`check=rules(AtLeast("std", 0), ...)`)."""
    return All(tuple(given))


def rules_from(stored: list[dict[str, Any]]) -> All:
    """The rules back from the catalog."""
    return All(tuple(RULES[r["rule"]](**{k: v for k, v in r.items() if k != "rule"}) for r in stored))


def check_value(name: str, key: str, value: Any, expected: type | str | None, choices: tuple | None) -> Any:
    """One parameter's value against its type and choices; returns it in its canonical type."""
    where = f"parameter '{key}' of init '{name}'"
    if key == "gain" and isinstance(value, str):
        if value not in ("auto", *NONLINEARITIES):
            raise InitbenchError(f"{where} must be a number, 'auto' or one of {', '.join(NONLINEARITIES)}")
        return value
    if expected is bool and not isinstance(value, bool):
        raise InitbenchError(f"{where} must be true or false, got {value!r}")
    if expected in (int, float, "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InitbenchError(f"{where} must be a number, got {value!r}")
        if expected is int and value != int(value):
            raise InitbenchError(f"{where} must be a whole number, got {value!r}")
        if expected != "number":
            value = expected(value)
        if not math.isfinite(value):
            raise InitbenchError(f"{where} must be finite, got {value!r}")
    if expected is str and not isinstance(value, str):
        raise InitbenchError(f"{where} must be a name, got {value!r}")
    if choices and value not in choices:
        raise InitbenchError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def resolve(name: str, defaults: Mapping[str, Any], types: Mapping[str, Any], choices: Mapping[str, tuple],
            check: Check | None, given: Mapping[str, Any], required: Any = REQUIRED) -> dict[str, Any]:
    """The given parameters checked and merged over the defaults (walk parameters included); `required` marks a
    parameter without a default."""
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise InitbenchError(f"init '{name}' has no parameter '{key}'; valid: {', '.join(defaults)}")
        out[key] = check_value(name, key, value, types.get(key), choices.get(key))
    missing = [k for k, v in out.items() if v is required or (isinstance(required, str) and v == required)]
    if missing:
        raise InitbenchError(f"init '{name}' needs {', '.join(f'{k}=...' for k in missing)}")
    bias = out["bias"]
    if isinstance(bias, bool) or not (bias in ("zeros", "keep") or isinstance(bias, int | float)):
        raise InitbenchError(f"parameter 'bias' of init '{name}' must be zeros, keep or a number, got {bias!r}")
    for key, allowed in WALK_CHOICES.items():
        if out[key] not in allowed:
            raise InitbenchError(f"parameter '{key}' of init '{name}' must be {' or '.join(allowed)}, "
                                 f"got {out[key]!r}")
    problem = check(out) if check else None
    if problem:
        raise InitbenchError(f"init '{name}': {problem}")
    return out
