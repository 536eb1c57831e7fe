"""Axes of a study: a model parameter, or a training setting, varied over values: `models: [{name: mlp, vary: {depth:
[2, 8, 16]}, width: 128}]` or `{name: mlp, vary: {batch_size: [32, 128, 512]}}`. Each value is its own problem,
named by the value (`digits_mlp[depth=16]`), paired across schemes as any problem is; the report adds how each
scheme's outcome changes along the axis (report.scaling)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.spec import SETTINGS
from initbench.syntax import format_call, format_value, parse_call


@dataclass(frozen=True)
class Axis:
    """One varied model parameter: the model's name, the parameter, its values in the order given, and the entry's
    other parameters."""

    model: str
    key: str
    values: tuple[Any, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    setting: bool = False  # a training setting (spec.SETTINGS) rather than a model parameter
    qualified: bool = False  # another axis varies the same parameter of the same model: names carry the fixed ones

    @property
    def subject(self) -> str:
        """The model as names show it: its name, with its fixed parameters where another axis shares the name."""
        return format_call(self.model, self.fixed) if self.qualified else self.model

    @property
    def name(self) -> str:
        """`mlp.depth`: how the report and its files name the axis."""
        return f"{self.subject}.{self.key}"

    def spec(self, value: Any) -> str:
        """The model spec at one value, e.g. `mlp(depth=16, width=128)` (a setting's axis: the one model)."""
        return format_call(self.model, dict(self.fixed) if self.setting else {**self.fixed, self.key: value})

    def label(self, value: Any) -> str:
        """The model's part of the problem's name at one value, e.g. `mlp[depth=16]`."""
        return f"{self.subject}[{self.key}={format_value(value)}]"

    def value_of(self, model_spec: str, settings: Mapping[str, Any]) -> tuple[bool, Any]:
        """(True, value) when a run of `model_spec` with these training settings lies on this axis, else (False,
        None)."""
        name, params = parse_call(model_spec, "model")
        if self.setting:
            value = self.declared(settings.get(self.key))
            return (name == self.model and params == dict(self.fixed) and value in self.values), value
        if name != self.model or self.key not in params:
            return False, None
        value = self.declared(params.pop(self.key))
        return (value in self.values and params == dict(self.fixed)), value

    def declared(self, value: Any) -> Any:
        """A run's value as the axis declares it: the word a spec reads as a value (`none` is None, `true` True)
        comes back as written."""
        for v in self.values:
            if isinstance(v, str) and v != value and spec_value(v) == value:
                return v
        return value


def spec_value(word: str) -> Any:
    """What a model spec reads `word` as (`none` -> None); the word itself where a spec could not read it."""
    try:
        return parse_call(f"v(v={word})", "model")[1]["v"]
    except InitbenchError:
        return word


def model_entry(item: Any, path: Path | str) -> tuple[list[Any], Axis | None]:
    """A `models:` entry with `vary:` expanded into one entry per value (the entry's `train:` kept on each), and its
    axis; any other entry as it is, with no axis."""
    if not isinstance(item, Mapping) or "vary" not in item:
        return [item], None
    item = dict(item)
    vary, where = item.pop("vary"), f"{path}: model {item.get('name')!r}"
    if not isinstance(vary, Mapping) or len(vary) != 1:
        raise InitbenchError(f"{where}: vary must map one parameter to its values, e.g. vary: {{depth: [2, 8, 16]}}"
                             " (to vary two, write two entries)")
    ((key, values),) = vary.items()
    if not isinstance(values, list) or not values or not all(isinstance(v, int | float | str) for v in values):
        raise InitbenchError(f"{where}: vary {key} must be a non-empty list of values, got {values!r}")
    if len(set(map(repr, values))) != len(values):
        raise InitbenchError(f"{where}: vary {key} lists a value twice: {values!r}")
    train = item.pop("train", None)
    setting = key in SETTINGS
    if key in item or (setting and isinstance(train, Mapping) and key in train):
        raise InitbenchError(f"{where}: {key} is both fixed and varied; keep it under vary only")
    name, fixed = parse_call(item, "model")
    axis = Axis(name, str(key), tuple(values), fixed, setting)
    if setting:  # each value a training setting of the entry
        return [{"name": name, **fixed, "train": {**(train or {}), key: v}} for v in values], axis
    return [{"name": name, **fixed, key: v, **({"train": train} if train is not None else {})}
            for v in values], axis


def axes_of(doc: Mapping[str, Any], path: Path | str = "sweep.json") -> tuple[Axis, ...]:
    """The axes a sweep file's document declares (none when its models vary nothing)."""
    models = doc.get("models")
    entries = models if isinstance(models, list) else [models]
    return qualified(tuple(axis for entry in entries if (axis := model_entry(entry, path)[1]) is not None))


def qualified(axes: tuple[Axis, ...]) -> tuple[Axis, ...]:
    """The axes, those that vary the same parameter of the same model named with their fixed parameters too
    (`mlp(width=64)[depth=16]` beside `mlp(width=128)[depth=16]`), so their problems stay apart."""
    seen = Counter((a.model, a.key) for a in axes)
    return tuple(dataclasses.replace(a, qualified=seen[(a.model, a.key)] > 1) for a in axes)


def find_axis(model_spec: str, settings: Mapping[str, Any], axes: tuple[Axis, ...]) -> tuple[Axis, Any] | None:
    """The axis a run (its model spec and training settings) lies on, with its value there."""
    for axis in axes:
        found, value = axis.value_of(model_spec, settings)
        if found:
            return axis, value
    return None
