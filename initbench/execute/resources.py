"""Where and with what a sweep's runs train: the executor, the study's torch thread count (one for every executor, kept
by reruns) and what each Ray task asks for, all checked before anything loads or is written."""

from __future__ import annotations

import math
from pathlib import Path

from initbench.errors import InitbenchError
from initbench.plan.sweep import Sweep
from initbench.record import study_or_empty
from initbench.spec import check_threads, cores

EXECUTORS = ("sequential", "ray")


def study_threads(sweep: Sweep, out: Path, threads: int | None, here: bool) -> int:
    """The torch threads every run of the study trains with: the one its sweep.json recorded (a rerun keeps it), else
    `threads` (--threads), else the sweep file's `resources: threads`, else one per core. Training `here` (not on
    Ray's nodes), at most this machine's cores."""
    named = "--threads"
    if threads is None and "threads" in sweep.resources:
        threads, named = int(sweep.resources["threads"]), f"{sweep.name}: resources threads"
    check_threads(threads, named, here=False)
    recorded = study_or_empty(out).get("threads")  # an unreadable study file is rewritten when the sweep starts
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
        if threads is not None and threads != recorded:
            raise InitbenchError(f"{named} {threads}: the study in {out} trains with {recorded} torch threads (its "
                                 "sweep.json says so), and a CPU run's numbers depend on the count; leave it out to "
                                 "keep the study's, or write to another --out")
        threads, named = recorded, f"the study in {out} (its sweep.json)"
    threads = threads or cores()
    check_threads(threads, named, here)
    return threads


def check_executor(executor: str, address: str | None, cpus: float | None, gpus: float | None) -> None:
    """The flags given on the command line (None: not given), before anything loads."""
    if executor not in EXECUTORS:
        raise InitbenchError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if executor != "ray":
        given = [flag for flag, value in (("--address", address), ("--cpus-per-task", cpus),
                                          ("--gpus-per-task", gpus)) if value is not None]
        if given:
            raise InitbenchError(f"{given[0]} is for --executor ray (the sequential executor trains here)")
        return
    from initbench.execute.ray import check_ray

    check_ray(address)


def _check_resources(cpus: float, gpus: float, cpus_from: str, gpus_from: str) -> None:
    """What each Ray task asks for, from the flags or the sweep file's `resources:` (named by `*_from`)."""
    if not (math.isfinite(cpus) and cpus > 0):
        raise InitbenchError(f"{cpus_from} must be above 0, got {cpus:g}")
    if not (math.isfinite(gpus) and gpus >= 0):
        raise InitbenchError(f"{gpus_from} must be 0 or more (fractions share a GPU), got {gpus:g}")


def task_resources(sweep: Sweep, executor: str, cpus: float | None, gpus: float | None,
                   threads: int) -> tuple[float, float, tuple[str, str]]:
    """(CPUs, GPUs) each Ray task asks for: the flags (None: not given), else the sweep file's `resources:`, else the
    study's thread count in CPUs and no GPU; and where each was given, for messages. Checked with the Ray executor."""
    named = ("--cpus-per-task" if cpus is not None else f"{sweep.name}: resources cpus_per_task",
             "--gpus-per-task" if gpus is not None else f"{sweep.name}: resources gpus_per_task")
    if cpus is None:
        cpus = sweep.resources.get("cpus_per_task", float(threads))
    if gpus is None:
        gpus = sweep.resources.get("gpus_per_task", 0.0)
    if executor == "ray":
        _check_resources(cpus, gpus, *named)
    return cpus, gpus, named
