"""One unit of work claimed, trained and recorded: a run, or runs that train as one lockstep group. The run's lock is
held while it trains; a complete record is left alone; bad input is refused before any file is written."""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from initbench.data import TensorDataModule
from initbench.errors import InitbenchError, RunBusy, raise_stop
from initbench.execute.claims import Claims, RunLock
from initbench.record import RunRecord, record_dir, run_config, run_dir_for
from initbench.spec import RunSpec
from initbench.train.prepare import Prepared, prepare
from initbench.train.sequential import train_run
from initbench.train.trainer import versions


def run(spec: RunSpec, out: Path = Path("results"), *, progress: bool = True, data_dir: Path | None = None,
        download: bool = True, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Train one run and write its record; a complete record already on disk is returned as is.

    The run's lock is held throughout: a run another process is training raises RunBusy, untouched.
    """
    run_dir, summary, outcome = claim_and_run(spec, out, progress=progress, data_dir=data_dir, download=download,
                                              force=force)
    refuse_busy(spec, run_dir, outcome)
    return run_dir, summary


def refuse_busy(spec: RunSpec, run_dir: Path, outcome: str) -> None:
    """A run another process holds is an error for whoever asked for that one run."""
    if outcome == "busy":
        raise RunBusy(f"run {spec.run_id} is being trained by another process ({run_dir}); nothing was touched")


def claim_and_run(spec: RunSpec, out: Path, *, progress: bool = True, data_dir: Path | None = None,
                  download: bool = True, keep_going: bool = False, force: bool = False,
                  on_step: Callable[[int], None] | None = None) -> tuple[Path, dict[str, Any], str]:
    """(run dir, summary, outcome): outcome is `trained`, `done` (complete before, by anyone) or `busy`.

    With `keep_going` (a sweep), a run whose preparation fails after validation (a plug-in that
    raises, a layer LSUV cannot run) is recorded as failed instead of stopping the caller. With
    `force`, a complete run is trained again; its old record is replaced only once the new one is whole.
    `on_step(steps)` is called after every training batch with the optimizer steps taken so far.
    """
    existing = RunRecord(record_dir(spec, out))
    if existing.complete and not force:
        return existing.path, existing.summary(), "done"
    run_dir = run_dir_for(spec, out)
    started = time.time()
    prepared = _prepare_or_error(spec, data_dir, download, keep_going)  # bad input: before any file
    claims = Claims()
    try:
        if _claim(claims, run_dir) is None:
            return run_dir, {}, "busy"
        existing = RunRecord(record_dir(spec, out))
        replace = force and existing.complete
        if existing.complete and not replace:  # finished by another process since we looked
            return existing.path, existing.summary(), "done"
        target = run_dir.with_name(f".{run_dir.name}.new-{os.getpid()}") if replace else run_dir
        if isinstance(prepared, BaseException):
            summary = _record_failure(spec, target, prepared, started)
        else:
            summary = train_run(prepared, out, target, progress, started, on_step)
        if replace:  # the new record is whole: swap it in, then drop the old one
            old = existing.path.with_name(f".{existing.path.name}.old-{os.getpid()}")
            os.rename(existing.path, old)
            os.rename(target, run_dir)
            shutil.rmtree(old)
        return run_dir, summary, "trained"
    finally:
        claims.release()


def _prepare_or_error(spec: RunSpec, data_dir: Path | None, download: bool, keep_going: bool,
                      data: TensorDataModule | None = None) -> Prepared | BaseException:
    """The prepared run, or the error to record as its failure: bad input (InitbenchError) raises unless
    `keep_going`; a library error or an out-of-memory is a result of the run."""
    try:
        return prepare(spec, data_dir, download, data)
    except InitbenchError as exc:
        if not keep_going:
            raise
        return exc
    except Exception as exc:
        raise_stop(exc)
        return exc


def _claim(claims: Claims, run_dir: Path) -> RunLock | None:
    """The run's lock, held in `claims`, or None when another process holds it."""
    try:
        return claims.take(run_dir)
    except OSError as exc:
        raise InitbenchError(f"cannot write the run record to {run_dir}: {exc.strerror or exc}") from None


def claim_and_run_group(specs: list[RunSpec], out: Path, *, progress: bool = True, data_dir: Path | None = None,
                        download: bool = True, on_step: Callable[[int], None] | None = None,
                        note: Callable[[str], None] = print, keep_going: bool = False,
                        lockstep_mode: str = "auto") -> list[tuple[RunSpec, Path, dict[str, Any], str]]:
    """Runs that share everything but the init, trained as one lockstep group where the model allows (else one by
    one, with a one-line `note` saying why): [(spec, run dir, summary, outcome)] in the given order, outcomes as
    `claim_and_run`'s. Complete and busy runs are left alone. With `keep_going` (a sweep), a run whose preparation
    fails is recorded as failed; without, bad input raises as it does for `claim_and_run`. `lockstep_mode` (auto,
    vmap or loop) is how the group computes its members (`train.lockstep.rule_mode` for auto)."""
    from initbench.train import lockstep

    results: dict[str, tuple[RunSpec, Path, dict[str, Any], str]] = {}
    members, claims = [], Claims()
    started = time.time()
    try:
        for spec in specs:
            existing = RunRecord(record_dir(spec, out))
            run_dir = run_dir_for(spec, out)
            if existing.complete:
                results[spec.run_id] = (spec, existing.path, existing.summary(), "done")
                continue
            if _claim(claims, run_dir) is None:
                results[spec.run_id] = (spec, run_dir, {}, "busy")
                continue
            existing = RunRecord(record_dir(spec, out))
            if existing.complete:  # finished by another process since we looked
                results[spec.run_id] = (spec, existing.path, existing.summary(), "done")
                continue
            # the group's runs share one data module (same data, split and order)
            prepared = _prepare_or_error(spec, data_dir, download, keep_going, members[0][0].data if members else None)
            if isinstance(prepared, BaseException):  # recorded as this run's failure, as one by one
                results[spec.run_id] = (spec, run_dir, _record_failure(spec, run_dir, prepared, started), "trained")
                continue
            members.append((prepared, run_dir))
        reason = lockstep.why_not(members[0][0].spec, members[0][0].module.model) if members else None
        if members and not reason:
            try:
                summaries = lockstep.train_group(members, out, progress, started, on_step, lockstep_mode)
                for (prepared, run_dir), summary in zip(members, summaries, strict=True):
                    results[prepared.spec.run_id] = (prepared.spec, run_dir, summary, "trained")
            except lockstep.LockstepFailed as why:
                # the members' own models were only copied into the stack: they are still as initialised
                reason = f"the group could not train together ({str(why)[:200]}): trained one by one"
        if members and reason:
            note(f"lockstep: {members[0][0].spec.problem}: {reason}")
            for prepared, run_dir in members:
                summary = train_run(prepared, out, run_dir, False, time.time(), on_step)
                results[prepared.spec.run_id] = (prepared.spec, run_dir, summary, "trained")
    finally:
        claims.release()
    return [results[s.run_id] for s in specs if s.run_id in results]


def _record_failure(spec: RunSpec, run_dir: Path, exc: BaseException, started: float) -> dict[str, Any]:
    """A run that failed before training: its record says so (config, then summary last)."""
    record = RunRecord(run_dir)
    record.begin(run_config(spec, versions(), None))
    summary = {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": "".join(traceback.format_exception(exc, limit=5)),
               "wall_time_s": round(time.time() - started, 3)}
    record.finish(summary)
    return summary
