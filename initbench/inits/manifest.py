"""The manifest: what one `apply_init` call did to every parameter, JSON-serialisable and printable."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from initbench.syntax import format_call


@dataclass
class ParamRecord:
    """What the walk did to one parameter tensor.

    `fan_in`/`fan_out` are the fans the scheme used (per block for packed weights); `blocks` names
    the packed matrices filled one at a time; `distribution` is what the values were drawn from.
    """

    name: str
    module_type: str
    role: str
    shape: list[int]
    fan_in: int | float | None
    fan_out: int | float | None
    scheme: str
    params: dict[str, Any]
    note: str = ""
    mean: float | None = None
    std: float | None = None
    blocks: list[str] = field(default_factory=list)
    distribution: dict[str, Any] | None = None


@dataclass
class Manifest:
    """Per-parameter record of one `apply_init` call, with the model-wide notes and warnings."""

    init: str
    nonlinearity: str
    records: list[ParamRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> dict[str, int]:
        """How many parameter tensors got each scheme."""
        return dict(Counter(r.scheme for r in self.records))

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def table(self) -> str:
        head = ("parameter", "type", "shape", "fan_in", "fan_out", "scheme", "std", "note")
        rows = [head] + [
            (r.name, r.module_type, "x".join(map(str, r.shape)), _s(r.fan_in), _s(r.fan_out),
             format_call(r.scheme, r.params),
             "-" if r.std is None else f"{r.std:.4g}", r.note)
            for r in self.records
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join([f"init: {self.init}    nonlinearity: {self.nonlinearity}", *lines,
                          *(f"warning: {w}" for w in self.warnings)])


def _s(v: int | float | None) -> str:
    return "-" if v is None else f"{v:g}"
