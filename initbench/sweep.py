"""Experiment file -> grid of RunSpecs (checked before any work), and the shards it splits into."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from initbench import catalog
from initbench.errors import InitbenchError
from initbench.plan import LogSpec, RunSpec
from initbench.spec import format_call, parse_call

# This module stays light at import (torch and Lightning load after the file's names are checked).

LOGGERS = ("csv", "wandb")
WANDB_KEYS = ("project", "entity")
TOP_KEYS = ("name", "description", "datasets", "models", "inits", "seeds", "train", "baseline", "logger", "wandb")
# RunSpec fields a sweep file may set under `train:` (and per model/dataset): those that change the
# result, less the grid's own axes. Logging settings have their own keys (`logger`, `wandb`).
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(RunSpec)
                   if f.compare and f.name not in ("model", "init", "dataset", "seed"))


@dataclass(frozen=True)
class Sweep:
    """A parsed experiment file: its name, the raw document, and the grid of runs in execution order."""

    name: str
    source: dict[str, Any]
    runs: tuple[RunSpec, ...]

    def shard(self, index: int, count: int) -> tuple[RunSpec, ...]:
        """Shard `index` of `count` (1-based), in the grid's order. Runs that can train as one lockstep group stay in
        one shard; each problem's groups are dealt round-robin, so every shard gets a similar share of each."""
        order: dict[tuple[str, str], dict[str, None]] = {}  # problem -> its groups, in order of appearance
        for r in self.runs:
            order.setdefault((r.dataset, r.model), {})[r.group_key] = None
        dealt = [key for groups in order.values() for key in groups]
        mine = set(dealt[index - 1 :: count])
        return tuple(r for r in self.runs if r.group_key in mine)


def _check_keys(where: str, given: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise InitbenchError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))}; "
                             f"valid: {', '.join(valid)}")


def _train_settings(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InitbenchError(f"{where}: 'train' must be a mapping of settings, got {value!r}")
    _check_keys(f"{where} train", value, TRAIN_KEYS)
    return dict(value)


def _entries(doc: Mapping[str, Any], key: str, path: Path) -> list[Any]:
    value = doc.get(key)
    if value is None:
        raise InitbenchError(f"{path}: missing '{key}' (the grid needs datasets, models, inits and seeds)")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InitbenchError(f"{path}: empty grid: '{key}' is an empty list")
    return items


def _named(item: Any, what: str, path: Path) -> tuple[str, dict[str, Any]]:
    """A grid entry: 'name', 'name(k=v)' or {name: ..., k: v, train: {...}} -> (spec string, overrides)."""
    if isinstance(item, Mapping):
        item = dict(item)
        overrides = _train_settings(f"{path} {what} {item.get('name')}", item.pop("train", None))
        name, params = parse_call(item, what)
        return format_call(name, params), overrides
    if isinstance(item, str):
        return item, {}
    raise InitbenchError(f"{path}: a {what} entry must be a name or a mapping, got {item!r}")


def load_sweep(path: Path, name: str | None = None) -> Sweep:
    """Read and check an experiment file; every name in the grid is validated before anything runs."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InitbenchError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InitbenchError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(doc, Mapping):
        raise InitbenchError(f"{path}: a sweep file must be a YAML mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(str(path), doc, TOP_KEYS)
    experiment = str(name or doc.get("name") or path.stem)
    shared = _train_settings(str(path), doc.get("train"))
    datasets = [_named(d, "dataset", path) for d in _entries(doc, "datasets", path)]
    models = [_named(m, "model", path) for m in _entries(doc, "models", path)]
    try:  # every name of the grid, before torch and Lightning load
        for dataset, _ in datasets:
            catalog.check_name("dataset", parse_call(dataset, "dataset")[0])
        for model, _ in models:
            catalog.check_model(model)
        for init in _entries(doc, "inits", path):
            catalog.check_init(init)
    except InitbenchError as exc:
        raise InitbenchError(f"{path}: {exc}") from None
    from initbench.inits import canonical_init, parse_init

    inits = [str(parse_init(i)) for i in _entries(doc, "inits", path)]
    if doc.get("baseline") is not None and canonical_init(doc["baseline"]) not in map(canonical_init, inits):
        raise InitbenchError(f"{path}: baseline {doc['baseline']!r} is not one of the inits; valid: {', '.join(inits)}")
    seeds_doc = doc.get("seeds")
    if isinstance(seeds_doc, int) and not isinstance(seeds_doc, bool):
        if seeds_doc < 1:
            raise InitbenchError(f"{path}: empty grid: 'seeds' must be at least 1, got {seeds_doc}")
        seeds = list(range(seeds_doc))
    else:
        seeds = _entries(doc, "seeds", path)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise InitbenchError(f"{path}: 'seeds' must be a count or a list of integers, got {seeds_doc!r}")
    logger = doc.get("logger", "csv")
    if logger not in LOGGERS:
        raise InitbenchError(f"{path}: unknown logger {logger!r}; valid: {', '.join(LOGGERS)}")
    loggers = ("csv",) if logger == "csv" else ("csv", logger)
    wandb_doc = doc.get("wandb") or {}
    if not isinstance(wandb_doc, Mapping):
        raise InitbenchError(f"{path}: 'wandb' must be a mapping with keys {', '.join(WANDB_KEYS)}")
    _check_keys(f"{path} wandb", wandb_doc, WANDB_KEYS)
    log = LogSpec(loggers, experiment, **{f"wandb_{k}": v for k, v in wandb_doc.items()})
    runs = []
    for seed in seeds:  # seed-major: a sweep stopped early still holds complete paired comparisons
        for dataset, d_over in datasets:
            for model, m_over in models:
                for init in inits:
                    settings = {**shared, **m_over, **d_over}
                    try:
                        spec = RunSpec(model=model, init=init, dataset=dataset, seed=seed, log=log, **settings)
                        spec.validate()
                    except (TypeError, InitbenchError) as exc:
                        raise InitbenchError(f"{path}: {exc}") from None
                    runs.append(spec)
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise InitbenchError(f"{path}: the grid lists the same run twice (duplicate inits, models or seeds)")
    return Sweep(experiment, dict(doc), tuple(runs))


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 1, 1
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise InitbenchError(f"--shard must look like i/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise InitbenchError(f"--shard {text}: i must be between 1 and N")
    return index, count
