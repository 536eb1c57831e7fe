"""Experiment file -> grid of RunSpecs (checked before any work), and the shards it splits into."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from initbench import registry
from initbench.errors import InitbenchError
from initbench.plan.axes import Axis, model_entry, qualified
from initbench.plan.claims import METRICS, Claim, cell_attributes, parse_claims
from initbench.plan.tune import Tune, choose, parse_tune
from initbench.spec import LOGGERS, SETTINGS, LogSpec, RunSpec, check_threads, setting_defaults
from initbench.syntax import format_call, parse_call

# This module stays light at import (torch and Lightning load after the file's names are checked).

WANDB_KEYS = ("project", "entity")
TOP_KEYS = ("name", "description", "datasets", "models", "inits", "seeds", "train", "tune", "baseline", "logger",
            "wandb", "resources", "claims")
# What each Ray task asks of the cluster (`--executor ray`; the flags of the same names override them).
RESOURCE_KEYS = ("cpus_per_task", "gpus_per_task", "threads")
# Bounds on what a sweep file may ask for, checked before anything is built from it.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 1_000_000  # values once YAML aliases are expanded
MAX_RUNS = 1_000_000  # runs in the grid
# A sweep file sets a run's settings (spec.SETTINGS) under `train:` (and per model/dataset); logging settings have
# their own keys (`logger`, `wandb`).


@dataclass(frozen=True)
class Sweep:
    """A parsed experiment file: its name, the raw document, and the grid of runs in execution order.

    Without a `tune:` block, `runs` are the runs. With one, `tuning` is stage 1 (every init at every lr of the grid,
    on the tuning seeds) and `runs` is stage 2's grid at the file's lr, which `comparison` sets to each init's
    chosen lr once the tuning runs are recorded."""

    name: str
    source: dict[str, Any]
    runs: tuple[RunSpec, ...]
    tune: Tune | None = None
    tuning: tuple[RunSpec, ...] = ()
    reference: str | None = None  # the shared protocol's scheme: the baseline, else the first init
    resources: dict[str, float] = dataclasses.field(default_factory=dict)  # threads; per Ray task: cpus/gpus_per_task
    axes: tuple[Axis, ...] = ()  # model parameters varied over values (`vary:`), each value its own problem
    claims: tuple[Claim, ...] = ()  # what the file declares its runs will show (plan.claims), judged by the report

    def shard(self, index: int, count: int, runs: tuple[RunSpec, ...] | None = None) -> tuple[RunSpec, ...]:
        """Shard `index` of `count` (1-based) of `runs` (default: the grid), in order. Runs that can train as one
        lockstep group stay in one shard; each problem's groups are dealt round-robin, so every shard gets a similar
        share of each. The learning rate is not part of a group, so both stages deal alike."""
        runs = self.runs if runs is None else runs
        order: dict[tuple[str, str], dict[str, None]] = {}  # problem -> its groups, in order of appearance
        for r in runs:
            order.setdefault((r.dataset, r.model), {})[r.group_key] = None
        dealt = [key for groups in order.values() for key in groups]
        mine = set(dealt[index - 1 :: count])
        return tuple(r for r in runs if r.group_key in mine)

    def tuning_runs(self, template: RunSpec) -> dict[float, list[RunSpec]]:
        """lr -> the tuning runs (one per tuning seed) that decide `template`'s init's lr."""
        assert self.tune is not None
        return {lr: [dataclasses.replace(template, seed=s, lr=lr, log=self.tuning[0].log) for s in self.tune.seeds]
                for lr in self.tune.lrs}

    def stage2(self, score_of: Callable[[RunSpec], float | None], grid: tuple[RunSpec, ...] | None = None
               ) -> dict[str, tuple[tuple[RunSpec, ...], tuple[RunSpec, ...]]]:
        """Per protocol of the tune block: the grid's runs (default: all) at their chosen lr, and the grid runs
        whose lr waits for tuning runs. `score_of(run)` is a tuning run's score (`tune.score`), None while it is
        not recorded. The report calls this too, on the same records, so it ranks exactly the runs trained."""
        assert self.tune is not None
        grid = self.runs if grid is None else grid
        chosen: dict[str, float | None] = {}
        stages = {}
        for protocol in self.tune.protocols:
            planned, waiting = [], []
            for template in grid:
                basis = template if protocol == "per_init" else dataclasses.replace(template, init=self.reference)
                key = dataclasses.replace(basis, seed=self.tune.seeds[0], lr=self.tune.lrs[0]).run_id
                if key not in chosen:
                    scores = {lr: [score_of(r) for r in rs] for lr, rs in self.tuning_runs(basis).items()}
                    ready = all(v is not None for s in scores.values() for v in s)
                    chosen[key] = choose(scores) if ready else None  # type: ignore[arg-type]
                lr = chosen[key]
                if lr is None:
                    waiting.append(template)
                else:
                    planned.append(dataclasses.replace(template, lr=lr))
            stages[protocol] = (tuple(planned), tuple(waiting))
        return stages

    def comparison(self, score_of: Callable[[RunSpec], float | None],
                   grid: tuple[RunSpec, ...] | None = None) -> tuple[tuple[RunSpec, ...], tuple[RunSpec, ...]]:
        """Stage 2 as runs to train: every protocol's runs at their chosen lr (a run two protocols choose alike is
        one run), and the grid runs still waiting for tuning runs, once per protocol. Without a tune block: the
        grid, as it is."""
        grid = self.runs if grid is None else grid
        if self.tune is None:
            return grid, ()
        planned: dict[str, RunSpec] = {}
        waiting: list[RunSpec] = []
        for runs, wait in self.stage2(score_of, grid).values():
            planned.update((r.run_id, r) for r in runs if r.run_id not in planned)
            waiting += wait
        return tuple(planned.values()), tuple(waiting)


class _Bad:
    """The bad entries of a sweep file, each said once, then refused together in one line."""

    def __init__(self, path: Path) -> None:
        self.path, self.said = path, dict[str, None]()

    def add(self, message: str) -> None:
        self.said[message] = None

    def check(self, check: Callable[..., Any], *args: Any) -> None:
        try:
            check(*args)
        except InitbenchError as exc:
            self.add(str(exc))

    def refuse(self) -> None:
        if len(self.said) == 1:
            raise InitbenchError(f"{self.path}: {next(iter(self.said))}")
        if self.said:
            raise InitbenchError(f"{self.path}: {len(self.said)} bad entries: " + "; ".join(
                f"({i}) {m}" for i, m in enumerate(self.said, 1)))


def _check_keys(where: str, given: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    unknown = [k for k in given if k not in valid]
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(str(k), valid, n=1, cutoff=0.6)]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InitbenchError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))}; "
                             f"{hint}valid: {', '.join(valid)}")


def _block(where: str | Path, key: str, value: Any, valid: tuple[str, ...]) -> dict[str, Any]:
    """A mapping block of the sweep file (`train:`, `wandb:`, `resources:`): {} when absent, else its keys checked."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InitbenchError(f"{where}: '{key}' must be a mapping with keys {', '.join(valid)}")
    _check_keys(f"{where} {key}", value, valid)
    return dict(value)


def _train_settings(where: str, value: Any) -> dict[str, Any]:
    if value is not None and not isinstance(value, Mapping):  # its keys are many: say what it holds instead
        raise InitbenchError(f"{where}: 'train' must be a mapping of settings, got {value!r}")
    return _block(where, "train", value, SETTINGS)


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
    """Read and check an experiment file; every name in the grid is validated before anything runs. The file is
    bounded before it is parsed (its size, UTF-8 text) and after (what its YAML aliases expand to)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InitbenchError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InitbenchError(f"sweep file {path} is {len(data):,} bytes; a sweep file may hold at most "
                             f"{MAX_FILE_BYTES:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InitbenchError(f"sweep file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InitbenchError(f"malformed YAML in {path}{where}: {problem}") from None
    size = _expanded_size(doc, {})
    if size > MAX_NODES:
        raise InitbenchError(f"sweep file {path}: its YAML aliases expand to {size:,} values; at most {MAX_NODES:,}")
    return sweep_from_doc(doc, path, name)


def _expanded_size(node: Any, seen: dict[int, int]) -> int:
    """How many values `node` holds once its YAML aliases are written out (shared objects counted once per use,
    each computed once, so a nested-alias bomb is measured without being expanded)."""
    if not isinstance(node, dict | list):
        return 1
    if id(node) not in seen:
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        seen[id(node)] = 0  # a cycle (which safe_load cannot build) would count as empty
        seen[id(node)] = 1 + sum(_expanded_size(c, seen) for c in children)
    return seen[id(node)]


def sweep_from_doc(doc: Any, path: Path, name: str | None = None, check: bool = True) -> Sweep:
    """The Sweep a sweep file's document describes (`path` names it in messages). With `check`, every run is
    validated as `initbench run` would (the report, rebuilding a study's plan from its sweep.json, skips that)."""
    if not isinstance(doc, Mapping):
        raise InitbenchError(f"{path}: a sweep file must be a YAML mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(str(path), doc, TOP_KEYS)
    experiment = str(name or doc.get("name") or Path(path).stem)
    if experiment in (".", "..") or any(c in experiment for c in "/\\\0") or not experiment.strip():
        raise InitbenchError(f"{path}: the study name {experiment!r} must be a plain folder name (no path separators, "
                             "not . or ..): it names the results folder")
    shared = _train_settings(str(path), doc.get("train"))
    datasets = [_named(d, "dataset", path) for d in _entries(doc, "datasets", path)]
    entries = [model_entry(m, path) for m in _entries(doc, "models", path)]  # `vary:` entries expand per value
    models = [_named(m, "model", path) for expanded, _ in entries for m in expanded]
    axes = qualified(tuple(axis for _, axis in entries if axis is not None))
    bad = _Bad(path)  # every name of the grid, before torch and Lightning load; all bad entries said at once
    for dataset, _ in datasets:
        bad.check(registry.check_name, "dataset", parse_call(dataset, "dataset")[0])
    for model, _ in models:
        bad.check(registry.check_model, model)
    for init in _entries(doc, "inits", path):
        bad.check(registry.check_init, init)
    bad.refuse()
    defaults = setting_defaults()
    tuned = {"lr"} if doc.get("tune") is not None else set()  # a tuned study's problems are not told apart by lr
    cells = [cell_attributes(dataset, model, {k: v for k, v in {**defaults, **shared, **m_over, **d_over}.items()
                                              if k not in tuned})
             for dataset, d_over in datasets for model, m_over in models]
    claims = parse_claims(doc.get("claims"), str(path), _entries(doc, "inits", path), cells, METRICS)
    seeds_doc = doc.get("seeds")
    n_seeds = seeds_doc if isinstance(seeds_doc, int) and not isinstance(seeds_doc, bool) else len(
        seeds_doc) if isinstance(seeds_doc, list) else 1
    runs_in_grid = n_seeds * len(datasets) * len(models) * len(_entries(doc, "inits", path))
    if runs_in_grid > MAX_RUNS:
        raise InitbenchError(f"{path}: the grid has {runs_in_grid:,} runs (seeds x datasets x models x inits); at "
                             f"most {MAX_RUNS:,}")
    if isinstance(seeds_doc, int) and not isinstance(seeds_doc, bool):
        if seeds_doc < 1:
            raise InitbenchError(f"{path}: empty grid: 'seeds' must be at least 1, got {seeds_doc}")
        seeds = list(range(seeds_doc))
    else:
        seeds = _entries(doc, "seeds", path)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise InitbenchError(f"{path}: 'seeds' must be a count or a list of integers, got {seeds_doc!r}")
    tune = parse_tune(doc.get("tune"), str(path), seeds)
    if tune is not None:  # the tuning stage sets the lr, and the seeds it tunes on must be its own
        entries = [("train", shared), *((f"{n} train", o) for n, o in datasets + models)]
        fixed = [(where, k) for where, settings in entries for k in ("lr", "init_seed", "data_seed") if k in settings]
        if fixed:
            where, key = fixed[0]
            why = ("the tuning stage chooses each run's lr" if key == "lr" else
                   "it would give tuning and comparison runs the same seed")
            raise InitbenchError(f"{path}: {where} sets {key}, which a tune block does not allow: {why}; remove it")
    from initbench.inits import canonical_init, parse_init

    inits = [str(parse_init(i)) for i in _entries(doc, "inits", path)]
    if doc.get("baseline") is not None and canonical_init(doc["baseline"]) not in map(canonical_init, inits):
        raise InitbenchError(f"{path}: baseline {doc['baseline']!r} is not one of the inits; valid: {', '.join(inits)}")
    logger = doc.get("logger", "csv")
    if logger not in LOGGERS:
        raise InitbenchError(f"{path}: unknown logger {logger!r}; valid: {', '.join(LOGGERS)}")
    loggers = ("csv",) if logger == "csv" else ("csv", logger)
    wandb_doc = _block(path, "wandb", doc.get("wandb") or None, WANDB_KEYS)
    log = LogSpec(loggers, experiment, **{f"wandb_{k}": v for k, v in wandb_doc.items()})
    resources = _resources(doc.get("resources"), path)
    if check:
        from initbench.train.trainer import check_trainer
    runs, bad = [], _Bad(path)
    for seed in seeds:  # seed-major: a sweep stopped early still holds complete paired comparisons
        for dataset, d_over in datasets:
            for model, m_over in models:
                for init in inits:
                    settings = {**shared, **m_over, **d_over}
                    try:
                        spec = RunSpec(model=model, init=init, dataset=dataset, seed=seed, log=log, **settings)
                        if check:
                            spec.validate()
                            check_trainer(spec.accelerator, spec.precision)  # once per pair (cached)
                    except (TypeError, InitbenchError) as exc:
                        bad.add(str(exc))
                        continue
                    runs.append(spec)
    bad.refuse()
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise InitbenchError(f"{path}: the grid lists the same run twice (duplicate inits, models or seeds)")
    if tune is None:
        return Sweep(experiment, dict(doc), tuple(runs), resources=resources, axes=axes, claims=claims)
    # stage 1: the grid's first seed's runs, at every lr, on each tuning seed (seed-major, the lr innermost: one
    # lockstep group per problem and tuning seed); its runs log under their own experiment name
    tune_log = dataclasses.replace(log, experiment=f"{experiment}-tune")
    tuning = [dataclasses.replace(r, seed=t, lr=lr, log=tune_log)
              for t in tune.seeds for r in runs if r.seed == seeds[0] for lr in tune.lrs]
    reference = inits[0]
    if doc.get("baseline") is not None:
        reference = next(i for i in inits if canonical_init(i) == canonical_init(doc["baseline"]))
    return Sweep(experiment, dict(doc), tuple(runs), tune, tuple(tuning), reference, resources, axes, claims)


def _resources(value: Any, path: Path) -> dict[str, float]:
    """`resources: {threads: 2, cpus_per_task: 2, gpus_per_task: 0.25}`: the torch threads every run trains with, and
    what each Ray task asks for (checked as the flags are)."""
    value = _block(path, "resources", value, RESOURCE_KEYS)
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InitbenchError(f"{path}: resources {key} must be a number, got {number!r}")
    check_threads(value.get("threads"), f"{path}: resources threads", here=False)  # checked here when it trains here
    return {k: v if k == "threads" else float(v) for k, v in value.items()}


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
