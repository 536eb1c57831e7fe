"""Per-parameter rules: fnmatch patterns on parameter names -> the spec those parameters get.

`apply_init(model, "kaiming_normal", rules={"classifier.fc3.*": "zeros", "*.bn3.weight": "zeros"})`:
the first matching pattern wins, whatever the parameter's role; the rest get the main scheme.
A rule's spec is any tensor scheme with its parameters, or `keep` to leave the parameter as it is.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from initbench.errors import InitbenchError
from initbench.inits.registry import Strategy, get_strategy, parse_init


@dataclass(frozen=True)
class Rule:
    pattern: str
    spec: str  # canonical spec string, or "keep"
    strategy: Strategy | None  # None: keep
    params: Mapping[str, Any] = field(default_factory=dict)
    fallback: tuple[Strategy, dict[str, Any]] | None = None

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


INHERITED = ("blocks", "fans", "fallback")  # walk parameters a rule takes from the main spec unless it sets them


def resolve_fallback(text: str, owner: str) -> tuple[Strategy, dict[str, Any]]:
    try:
        spec = parse_init(text)
        strategy = get_strategy(spec.name)
        return strategy, {k: v for k, v in strategy.resolve(spec.params).items() if k in strategy.params}
    except InitbenchError as exc:
        raise InitbenchError(f"fallback of {owner}: {exc}") from None


def resolve_rules(rules: Mapping[str, str] | None, owner: str, main: Mapping[str, Any]) -> list[Rule]:
    """Check every rule's spec (a tensor scheme with valid parameters, or keep) before any tensor changes.

    A rule's spec takes `blocks`, `fans` and `fallback` from the main spec unless it sets them.
    """
    out = []
    for pattern, text in (rules or {}).items():
        if text == "keep":
            out.append(Rule(pattern, text, None))
            continue
        where = f"rule '{pattern}' of init '{owner}'"
        try:
            spec = parse_init(text)
            strategy = get_strategy(spec.name)
        except InitbenchError as exc:
            raise InitbenchError(f"{where}: {exc}") from None
        if strategy.whole_model:
            raise InitbenchError(f"{where}: '{spec.name}' initialises a whole model, not one tensor; "
                                 f"use a tensor scheme or keep")
        if spec.params.get("rules"):
            raise InitbenchError(f"{where}: a rule's spec cannot have rules of its own")
        try:
            params = strategy.resolve({**{k: main[k] for k in INHERITED}, **spec.params})
        except InitbenchError as exc:
            raise InitbenchError(f"{where}: {exc}") from None
        out.append(Rule(pattern, text, strategy, params, resolve_fallback(params["fallback"], where)))
    return out


def first_match(rules: Iterable[Rule], name: str) -> Rule | None:
    return next((r for r in rules if r.matches(name)), None)


def unmatched(rules: Iterable[Rule], names: list[str]) -> list[str]:
    """A warning for each rule that matches no parameter: a typo, or a rule meant for another model of a sweep."""
    sample = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return [f"rule '{r.pattern}' matches no parameter of this model (its parameters: {sample})"
            for r in rules if not any(r.matches(n) for n in names)]
