"""Experiment file -> grid of RunSpecs -> resumable, shardable execution."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from initbench import catalog
from initbench.errors import InitbenchError
from initbench.plan import LogSpec, RunSpec
from initbench.record import RunRecord
from initbench.results import clear_orphan_lock, write_json
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


# A run's cost, for the sweep's bar: steps x batch size x (forward multiply-accumulates per example + a fixed
# per-example overhead). 150k is the overhead that makes this model reproduce the measured training throughput of
# the MLP and the SimpleCNN on digits on a 2-core CPU (95k and 22k images/s), whose forward passes are 50k and 707k.
OVERHEAD_MACS = 150_000


@dataclass(frozen=True)
class Problem:
    """What preflight learns of a (dataset, model): the training pool's size and the forward cost of one example."""

    examples: int
    macs: int
    not_lockstep: str | None = None  # why its runs cannot train as lockstep groups


def preflight(runs: tuple[RunSpec, ...], data_dir: Path | None, download: bool) -> dict[tuple[str, str], Problem]:
    """Load every dataset and build every (model, dataset) pair once, so that missing data or a user model
    that does not build stops the sweep now, with nothing written, not at its 50th run; returns their costs."""
    import torch

    from initbench.data import decode
    from initbench.lockstep import why_not
    from initbench.models import build_model, forward_macs

    problems = {}
    for dataset, model in sorted({(r.dataset, r.model) for r in runs}):
        d = decode(dataset, data_dir, download)
        first = next(r for r in runs if (r.dataset, r.model) == (dataset, model))
        with torch.random.fork_rng(devices=[]):
            built = build_model(model, tuple(d.x_train.shape[1:]), d.num_classes)
            problems[(dataset, model)] = Problem(len(d.y_train), forward_macs(built, d.x_train[:1].float()),
                                                 why_not(first, built))
    return problems


def run_steps(spec: RunSpec, examples: int) -> int:
    """The training steps a run will take (fewer if it diverges): epochs x batches of its training split."""
    train = examples - max(1, round(examples * spec.val_fraction))
    if spec.limit_train is not None:
        train = min(train, spec.limit_train)
    steps = spec.epochs * -(-train // spec.batch_size)
    return steps if spec.max_steps is None else min(steps, spec.max_steps)


def run_cost(spec: RunSpec, problem: Problem) -> tuple[int, float]:
    """(steps, cost of one step) in multiply-accumulates."""
    return run_steps(spec, problem.examples), float(spec.batch_size * (problem.macs + OVERHEAD_MACS))


ENGINES = ("auto", "lockstep", "sequential")


def units(todo: list[RunSpec], problems: dict[tuple[str, str], Problem], engine: str,
          lockstep_max: int) -> list[list[RunSpec]]:
    """What trains together: with `lockstep` or `auto`, runs that share everything but the init (at most
    `lockstep_max` per group, in the grid's order), where the problem allows; else one run at a time."""
    if engine == "sequential":
        return [[r] for r in todo]
    groups: dict[str, list[RunSpec]] = {}
    for r in todo:
        if problems[(r.dataset, r.model)].not_lockstep:
            groups[r.run_id] = [r]
        else:
            groups.setdefault(r.group_key, []).append(r)
    return [g[i : i + lockstep_max] for g in groups.values() for i in range(0, len(g), lockstep_max)]


def execute(sweep: Sweep, out: Path, shard: tuple[int, int] = (1, 1), data_dir: Path | None = None,
            download: bool = True, progress: bool = True, engine: str = "auto",
            lockstep_max: int = 32) -> dict[str, int]:
    """Run this shard's incomplete runs (skipping complete ones) and return counts by outcome.

    On a terminal, one bar for the whole shard advances step by step, each run weighted by its cost (an MLP run
    moves it less than a CNN run), with the tally; without one, a line per finished run. The engine (`auto`:
    lockstep groups where the model allows, with a note where it does not) decides what trains together."""
    from tqdm.auto import tqdm

    from initbench.runner import claim_and_run, claim_and_run_group, record_dir

    if engine not in ENGINES:
        raise InitbenchError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if lockstep_max < 1:
        raise InitbenchError(f"--lockstep-max must be at least 1, got {lockstep_max}")
    runs = sweep.shard(*shard)
    problems = preflight(runs, data_dir, download)
    if engine != "sequential":
        for (dataset, model), problem in sorted(problems.items()):
            if problem.not_lockstep and engine == "lockstep":
                raise InitbenchError(f"--engine lockstep: {dataset}_{model}: {problem.not_lockstep}; use --engine "
                                     "auto (lockstep where possible) or sequential")
            if problem.not_lockstep:
                print(f"initbench: {dataset}_{model}: {problem.not_lockstep}", file=sys.stderr)
    try:
        write_json(Path(out) / "sweep.json", {"name": sweep.name, "source": sweep.source, "runs": len(sweep.runs)})
    except OSError as exc:
        raise InitbenchError(f"cannot write to the results folder {out}: {exc.strerror or exc}") from None
    counts = {"ok": 0, "diverged": 0, "collapsed": 0, "failed": 0, "skipped": 0, "busy": 0}
    todo = []
    for r in runs:
        where = record_dir(r, out)
        clear_orphan_lock(where)  # a process killed right after finishing a run leaves its lock file behind
        if not RunRecord(where).complete:
            todo.append(r)
    counts["skipped"] = len(runs) - len(todo)
    costs = {r.run_id: run_cost(r, problems[(r.dataset, r.model)]) for r in runs}
    total = sum(steps * per_step for steps, per_step in costs.values())
    pending = {r.run_id for r in todo}
    terminal = progress and sys.stderr.isatty()
    bar = tqdm(total=total, initial=total - sum(s * c for k, (s, c) in costs.items() if k in pending),
               disable=not terminal, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
               desc=f"{sweep.name}" + (f" [shard {shard[0]}/{shard[1]}]" if shard[1] > 1 else ""))
    try:
        for unit in units(todo, problems, engine, lockstep_max):
            steps, per_step = costs[unit[0].run_id]
            per_step *= len(unit)  # a group's step is every member's step
            start = bar.n

            def advance(step: int, start: float = start, steps: int = steps, per_step: float = per_step) -> None:
                bar.update(max(0.0, start + min(step, steps) * per_step - bar.n))

            head = unit[0]
            what = f"{head.init} seed {head.seed}" if len(unit) == 1 else f"{len(unit)} inits seed {head.seed}"
            bar.set_postfix_str(f"{sum(counts.values())}/{len(runs)} runs | {_tally(counts) or 'first run'} | "
                                f"{head.problem} {what}", refresh=True)
            step_report = advance if terminal else None
            if engine == "sequential" or problems[(head.dataset, head.model)].not_lockstep:  # said once, above
                _, summary, outcome = claim_and_run(head, out, progress=False, data_dir=data_dir, download=download,
                                                    keep_going=True, on_step=step_report)
                done = [(head, summary, outcome)]
            else:
                done = [(spec, summary, outcome) for spec, _, summary, outcome in claim_and_run_group(
                    unit, out, progress=False, data_dir=data_dir, download=download, on_step=step_report,
                    note=_note, keep_going=True)]
            bar.update(max(0.0, start + steps * per_step - bar.n))  # a run that diverged early: to its end
            for spec, summary, outcome in done:
                counts[summary["status"] if outcome == "trained" else {"done": "skipped", "busy": "busy"}[outcome]] += 1
                if progress and not terminal:  # a log, not a terminal: one line per run, as it finishes
                    print(f"[{sum(counts.values())}/{len(runs)}] {_run_line(spec, summary, outcome)}", flush=True)
        bar.set_postfix_str(f"{sum(counts.values())}/{len(runs)} runs | {_tally(counts)}", refresh=True)
    finally:
        bar.close()
    return counts


def _note(message: str) -> None:
    print(f"initbench: {message}", file=sys.stderr)


def _tally(counts: dict[str, int]) -> str:
    return " ".join(f"{counts[k]} {k}" for k in ("ok", "diverged", "collapsed", "failed") if counts[k])


def _run_line(spec: RunSpec, summary: dict[str, Any], outcome: str) -> str:
    """`digits_mlp kaiming_normal seed 3: ok val 0.973 (1.2 s)`."""
    head = f"{spec.problem} {spec.init} seed {spec.seed}"
    if outcome != "trained":
        return f"{head}: {'already complete' if outcome == 'done' else 'being trained elsewhere'}"
    val = summary.get("val_acc_final")
    detail = f" val {val:.3f}" if isinstance(val, int | float) else ""
    if summary.get("diverged_step") is not None:
        detail = f" at step {summary['diverged_step']}{detail}"
    if summary["status"] == "failed":
        detail = f" ({str(summary.get('error', ''))[:80]})"
    return f"{head}: {summary['status']}{detail} ({summary.get('wall_time_s', 0):.1f} s)"


def completed(sweep: Sweep, out: Path) -> list[tuple[RunSpec, bool]]:
    """Each run of the grid with whether its record is complete."""
    from initbench.runner import record_dir

    return [(r, RunRecord(record_dir(r, out)).complete) for r in sweep.runs]
