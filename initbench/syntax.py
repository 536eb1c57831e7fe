"""`NAME(key=value, ...)` strings, the one syntax for choosing inits and models from the CLI and YAML."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from initbench.errors import InitbenchError

_CALL_RE = re.compile(r"\s*([A-Za-z_][\w.-]*(?::[A-Za-z_]\w*)?)\s*(?:\((.*)\))?\s*", re.S)


def parse_call(spec: str | Mapping[str, Any] | tuple[str, Mapping[str, Any]], what: str) -> tuple[str, dict[str, Any]]:
    """Parse `NAME`, `NAME(key=value, ...)` or a mapping `{name: NAME, key: value}` into (name, params); a pair
    already parsed (e.g. `RunSpec.model_call`) comes back as it is, its params a fresh dict.

    Values are Python/YAML literals; bare words are strings (`mode=fan_out`), and a nested call
    (`fallback=normal(std=0.01)`) is kept as its text.
    """
    if isinstance(spec, tuple):
        return spec[0], dict(spec[1])
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise InitbenchError(f"{what} mapping {dict(spec)!r} needs a 'name' key with a string value")
        name, inner = parse_call(name, what)  # {name: 'normal(std=0.02)', ...} keeps the std
        return name, {**inner, **params}
    if not isinstance(spec, str):
        raise InitbenchError(f"a {what} must be a string like 'NAME(key=value)', got {spec!r}")
    match = _CALL_RE.fullmatch(spec)
    if not match:
        raise InitbenchError(f"malformed {what} spec {spec!r}: expected NAME or NAME(key=value, ...)")
    src = f"f({match.group(2) or ''})"
    try:
        call = ast.parse(src, mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise InitbenchError(f"malformed {what} spec {spec!r}: arguments must be key=value, ...")
    names = [k.arg for k in call.keywords]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise InitbenchError(f"malformed {what} spec {spec!r}: '{twice}' is given twice")
    return match.group(1), {k.arg: _literal(k.value, src, spec, what) for k in call.keywords}


def _literal(node: ast.expr, src: str, spec: str, what: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, src, spec, what)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name):
        return {"true": True, "false": False, "none": None, "null": None}.get(node.id.lower(), node.id)
    if isinstance(node, ast.Tuple | ast.List):
        return [_literal(e, src, spec, what) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, src, spec, what): _literal(v, src, spec, what) for k, v in zip(node.keys, node.values,
                                                                                         strict=True)}
    if isinstance(node, ast.Call | ast.Attribute):
        return ast.get_source_segment(src, node)
    raise InitbenchError(f"malformed {what} spec {spec!r}: cannot read {ast.get_source_segment(src, node)!r}")


def format_call(name: str, params: Mapping[str, Any]) -> str:
    """The inverse of `parse_call` for display and hashing: `name(k=v, ...)`."""
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={format_value(v)}' for k, v in params.items())})"


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_]\w*", value) else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(format_value, value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)
