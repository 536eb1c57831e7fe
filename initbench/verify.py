"""`initbench verify`: retrain a sample of a results folder's records from their config.json, in a scratch folder, and
compare every number with the stored record; say what differs, and in what the environment differs.

A lockstep member's rounding depends on its group, so a member is retrained with the group its record names, in
the mode and with the thread count it trained with. Chosen before torch loads: the sample is drawn from the records'
JSON files alone."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.record import (
    DIAGNOSTICS,
    MANIFEST,
    METRICS,
    STUDY,
    SUMMARY,
    TIMINGS,
    RunRecord,
    read_json,
    read_study,
    run_dir_for,
)
from initbench.spec import RunSpec, cores

ENVIRONMENT = ("versions", "device", "threads", "engine", "lockstep_mode")  # what a difference is set beside


@dataclass
class Stored:
    """A complete record of the folder: where it is, its config, and which stage of the study it belongs to."""

    path: Path
    config: dict[str, Any]
    spec: RunSpec
    stage: str  # tuning or comparison

    @property
    def stratum(self) -> tuple[str, str]:
        return self.path.parent.name, self.stage


def stored_records(results_dir: Path) -> list[Stored]:
    """The complete records under a results folder, each with its stage (a tuned study's tuning runs are named by its
    plan); records whose config cannot be read are left out (`initbench report` lists them)."""
    tuning: set[str] = set()
    try:
        source = read_study(results_dir).get("source") or {}
        if isinstance(source, dict) and source.get("tune") is not None:
            from initbench.plan.sweep import sweep_from_doc

            tuning = {r.run_id for r in sweep_from_doc(source, results_dir / STUDY, check=False).tuning}
    except (OSError, ValueError, InitbenchError):
        pass  # an unreadable study file: every record counts as a comparison run
    records = []
    for summary in sorted(results_dir.glob(f"*/*/{SUMMARY}")):
        record = RunRecord(summary.parent)
        try:
            if not record.complete:
                continue
            config = record.config()
            spec = RunSpec.from_record(config["spec"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InitbenchError):
            continue
        records.append(Stored(record.path, config, spec, "tuning" if spec.run_id in tuning else "comparison"))
    return records


def sample(records: list[Stored], n: int, seed: int) -> list[Stored]:
    """`n` records drawn reproducibly (`seed`), spread evenly over the strata (problem x stage): one from each stratum
    in turn, each stratum's records in a shuffled order."""
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[Stored]] = {}
    for record in records:
        strata.setdefault(record.stratum, []).append(record)
    queues = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda r: r.path.name)
        rng.shuffle(members)
        queues.append(members)
    chosen: list[Stored] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


def first_difference(stored: Path, now: Path) -> str | None:
    """Where a retrained record first differs from the stored one, in words (None: every number is the same): the
    curves (metric and step), then the summary (timings aside), the step-0 diagnostics and the manifest."""
    old, new = (p / METRICS for p in (stored, now))
    if old.exists() != new.exists():
        return f"{METRICS} {'missing' if not new.exists() else 'new'} in the retrained record"
    if old.exists() and old.read_bytes() != new.read_bytes():
        rows = [list(csv.DictReader(io.StringIO(p.read_text()))) for p in (old, new)]
        for a, b in zip(*rows, strict=False):
            for column in dict.fromkeys([*a, *b]):
                if a.get(column) != b.get(column):
                    return (f"{METRICS} {column} at step {a.get('step', '?')}: {a.get(column) or 'empty'} stored, "
                            f"{b.get(column) or 'empty'} now")
        return f"{METRICS}: {len(rows[0])} rows stored, {len(rows[1])} now"
    for name, leave_out in ((SUMMARY, TIMINGS), (DIAGNOSTICS, ()), (MANIFEST, ())):
        values = []
        for root in (stored, now):
            try:
                data = read_json(root / name, numbers=False)
            except (OSError, ValueError):
                data = None
            values.append({k: v for k, v in data.items() if k not in leave_out} if isinstance(data, dict) else data)
        if values[0] != values[1]:
            where, old_value, new_value = _first_leaf(values[0], values[1])
            return f"{name}{' ' + where if where else ''}: {_short(old_value)} stored, {_short(new_value)} now"
    return None


def _first_leaf(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """The first place two JSON values differ, as a dotted path (a.b[2]), with the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if a.get(key) != b.get(key):
                return _first_leaf(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_leaf(x, y, f"{where}[{i}]")
    return where, a, b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def environment_difference(stored: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between where a record was made and where it was retrained (versions, device, threads, engine,
    lockstep mode), or that nothing does."""
    said = []
    for key in ENVIRONMENT:
        old, new = stored.get(key), now.get(key)
        if key == "versions" and isinstance(old, dict) and isinstance(new, dict):
            said += [f"{name} {old.get(name)} stored, {new.get(name)} now" for name in dict.fromkeys([*old, *new])
                     if old.get(name) != new.get(name)]
        elif old != new:
            said.append(f"{key} {old} stored, {new} now")
    return "; ".join(said) if said else "the same versions, device, threads, engine and mode"


def verify(results_dir: Path, n: int = 10, seed: int = 0, data_dir: Path | None = None, download: bool = True,
           say: Any = print) -> int:
    """Retrain `n` sampled records of `results_dir` and compare them; returns how many differ (0: all reproduced)."""
    results_dir = Path(results_dir)
    if n < 1:
        raise InitbenchError(f"--sample must be at least 1, got {n}")
    if not results_dir.is_dir():
        raise InitbenchError(f"no results folder at {results_dir}")
    records = stored_records(results_dir)
    if not records:
        raise InitbenchError(f"no complete run records under {results_dir}")
    chosen = sample(records, n, seed)
    by_id = {r.spec.run_id: r for r in records}
    strata = len({r.stratum for r in records})
    say(f"verify {results_dir}: {len(chosen)} of {len(records)} records, drawn over {strata} problem x stage strata "
        f"(seed {seed}), retrained from their config.json in a scratch folder")
    from initbench.execute.units import claim_and_run, claim_and_run_group
    from initbench.train.trainer import use_threads

    scratch = Path(tempfile.mkdtemp(prefix="initbench-verify-"))
    differ, trainings, start = 0, 0, time.time()
    try:
        for record in chosen:
            config, spec = record.config, _csv_only(record.spec)
            where = f"{record.path.parent.name}/{record.path.name}"
            group = config.get("group") if config.get("engine") == "lockstep" else None
            if config.get("engine") == "lockstep" and not isinstance(group, list):
                differ += 1
                say(f"  cannot retrain {where}: its record does not name its lockstep group (written by an older "
                    "initbench), and a member's numbers depend on the group")
                continue
            missing = [m for m in group or [] if m not in by_id]
            if missing:
                differ += 1
                say(f"  cannot retrain {where}: its lockstep group's member {missing[0]} has no complete record here")
                continue
            recorded = config.get("threads")
            use_threads(min(recorded if isinstance(recorded, int) and recorded >= 1 else cores(), cores()))
            if not (run_dir_for(spec, scratch) / SUMMARY).exists():  # a group retrained for an earlier sample
                trainings += 1
                if group:
                    claim_and_run_group([_csv_only(by_id[m].spec) for m in group], scratch, progress=False,
                                        data_dir=data_dir, download=download, keep_going=True, note=lambda _: None,
                                        lockstep_mode=config.get("lockstep_mode") or "auto")
                else:
                    claim_and_run(spec, scratch, progress=False, data_dir=data_dir, download=download,
                                  keep_going=True)
            now = run_dir_for(spec, scratch)
            difference = first_difference(record.path, now)
            how = (f"lockstep {config.get('lockstep_mode')} group of {len(group)}" if group else "sequential") + \
                f", {recorded if recorded is not None else '?'} thread{'s' * (recorded != 1)}"
            if difference is None:
                say(f"  same  {where} ({how})")
                continue
            differ += 1
            try:
                env = environment_difference(config, RunRecord(now).config())
            except (OSError, ValueError):
                env = "the retrained record has no config"
            say(f"  DIFFERS {where} ({how}): {difference}\n          environment: {env}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    same = len(chosen) - differ
    say(f"{same}/{len(chosen)} reproduced bit for bit ({trainings} trainings in {time.time() - start:.0f} s)")
    if (results_dir / "report.json").exists():
        from initbench.report import generation_mismatch

        torn = generation_mismatch(results_dir)
        say(f"report: {len(torn)} file(s) not of the generation report.json lists ({', '.join(torn[:3])}): a report "
            f"cut short; `initbench report {results_dir}` writes it whole" if torn else
            "report: every file is of the generation report.json lists")
    return differ


def _csv_only(spec: RunSpec) -> RunSpec:
    """The run as recorded, logging its curves to CSV only (W&B is no part of its numbers)."""
    return dataclasses.replace(spec, log=dataclasses.replace(spec.log, loggers=("csv",)))
