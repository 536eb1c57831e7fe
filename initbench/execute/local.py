"""A sweep's runs -> training, here: preflight, what trains together (engine), the shard's bar, outcomes."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.execute.claims import Claims, clear_orphan_lock
from initbench.execute.resources import check_executor, study_threads, task_resources
from initbench.plan.sweep import Sweep
from initbench.plan.tune import score as tune_score
from initbench.record import RunRecord, declare_claims, write_study
from initbench.spec import LOCKSTEP_MODES, RunSpec

# This module stays light at import (torch and Lightning load when a sweep runs).

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
    """Check the trainer's settings, load every dataset and build every (model, dataset) pair once, so that a
    setting Lightning rejects, missing data or a user model that does not build stops the sweep now, with nothing
    written, not at its 50th run; returns their costs."""
    import torch

    from initbench.data import check_limits, decode
    from initbench.models import build_model, forward_macs
    from initbench.train.lockstep import why_not
    from initbench.train.trainer import check_trainer

    for accelerator, precision in sorted({(r.accelerator, r.precision) for r in runs}):
        check_trainer(accelerator, precision)
    problems = {}
    for dataset, model in sorted({(r.dataset, r.model) for r in runs}):
        d = decode(dataset, data_dir, download)
        splits = {(r.batch_size, r.val_fraction, r.limit_train, r.limit_val, r.limit_test) for r in runs
                  if r.dataset == dataset}
        for batch_size, val_fraction, *limits in sorted(splits, key=str):
            check_limits(dataset, d, val_fraction, tuple(limits), batch_size)
        first = next(r for r in runs if (r.dataset, r.model) == (dataset, model))
        with torch.random.fork_rng(devices=[]):
            built = build_model(first.model_call, tuple(d.x_train.shape[1:]), d.num_classes)
            problems[(dataset, model)] = Problem(len(d.y_train), forward_macs(built, d.x_train[:1].float()),
                                                 why_not(first, built))
    return problems


def run_steps(spec: RunSpec, examples: int) -> int:
    """The training steps a run will take (fewer if it diverges): epochs x batches of its training split."""
    from initbench.datasets import train_steps, val_count

    train = examples - val_count(examples, spec.val_fraction)
    if spec.limit_train is not None:
        train = min(train, spec.limit_train)
    steps = spec.epochs * train_steps(train, spec.batch_size)
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
            lockstep_max: int = 64, executor: str = "sequential", address: str | None = None,
            cpus_per_task: float | None = None, gpus_per_task: float | None = None,
            lockstep_mode: str = "auto", threads: int | None = None) -> dict[str, int]:
    """Run this shard's incomplete runs (skipping complete ones) and return counts by outcome.

    With a `tune:` block, stage 1 (the tuning runs) trains first; then stage 2, each grid run at its init's chosen lr.
    Grid runs whose tuning runs are not all recorded yet (another shard still trains them) are left for a rerun and
    counted as `waiting`. On a terminal, one bar for the whole shard advances step by step, each run weighted by its
    cost (an MLP run moves it less than a CNN run), with the tally; without one, a line per finished run. The engine
    (`auto`: lockstep groups where the model allows, with a note where it does not) decides what trains together, and
    `lockstep_mode` how a group computes its members (auto: by the rule in `train.lockstep.rule_mode`, never by
    timing; vmap or loop pins it, and it is recorded in sweep.json and each record's config).
    Every run trains with `threads` torch threads (None: what the study recorded in sweep.json, else the sweep file's
    `resources: threads`, else one per core), Ray tasks included: a CPU run's numbers depend on the count.
    With the Ray executor, each task asks for `cpus_per_task` and `gpus_per_task` (None: the sweep file's
    `resources:`, else the study's thread count in CPUs and no GPU)."""

    if engine not in ENGINES:
        raise InitbenchError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if lockstep_max < 1:
        raise InitbenchError(f"--lockstep-max must be at least 1, got {lockstep_max}")
    if lockstep_mode not in ("auto", *LOCKSTEP_MODES):
        raise InitbenchError(f"unknown lockstep mode {lockstep_mode!r}; valid: auto, {', '.join(LOCKSTEP_MODES)}")
    check_executor(executor, address, cpus_per_task, gpus_per_task)
    threads = study_threads(sweep, out, threads, here=executor != "ray")
    cpus_per_task, gpus_per_task, named = task_resources(sweep, executor, cpus_per_task, gpus_per_task, threads)
    tuning, grid = sweep.shard(*shard, runs=sweep.tuning), sweep.shard(*shard)
    problems = preflight(tuning + grid, data_dir, download)
    if engine != "sequential":
        for (dataset, model), problem in sorted(problems.items()):
            if problem.not_lockstep and engine == "lockstep":
                raise InitbenchError(f"--engine lockstep: {dataset}_{model}: {problem.not_lockstep}; use --engine "
                                     "auto (lockstep where possible) or sequential")
            if problem.not_lockstep:
                print(f"initbench: {dataset}_{model}: {problem.not_lockstep}", file=sys.stderr)
    disconnect = None
    if executor == "ray":  # joined (or started) before anything is written: a bad address leaves nothing behind
        from initbench.execute.ray import connect

        disconnect = connect(address, cpus_per_task, gpus_per_task, named)
    else:
        from initbench.train.trainer import use_threads

        use_threads(threads)
    try:
        return _execute(sweep, out, shard, problems, tuning, grid, data_dir, download, progress, engine, lockstep_max,
                        (cpus_per_task, gpus_per_task) if executor == "ray" else None, lockstep_mode, threads)
    finally:
        if disconnect is not None:
            disconnect()


def _execute(sweep: Sweep, out: Path, shard: tuple[int, int], problems: dict[tuple[str, str], Problem],
             tuning: tuple[RunSpec, ...], grid: tuple[RunSpec, ...], data_dir: Path | None, download: bool,
             progress: bool, engine: str, lockstep_max: int, remote: tuple[float, float] | None,
             lockstep_mode: str = "auto", threads: int = 1) -> dict[str, int]:
    from tqdm.auto import tqdm

    try:
        how = {"claims": declare_claims(out, sweep.claims)} if sweep.claims else {}
        write_study(out, sweep.name, sweep.source, len(sweep.runs), lockstep_mode=lockstep_mode, threads=threads,
                    **how)
    except OSError as exc:
        raise InitbenchError(f"cannot write to the results folder {out}: {exc.strerror or exc}") from None
    counts = {"ok": 0, "diverged": 0, "collapsed": 0, "failed": 0, "skipped": 0, "busy": 0, "lost": 0, "waiting": 0}
    cost = lambda r: math.prod(run_cost(r, problems[(r.dataset, r.model)]))  # noqa: E731
    protocols = len(sweep.tune.protocols) if sweep.tune else 1
    planned = len(tuning) + len(grid) * protocols  # stage 2's exact count is known once its lrs are
    terminal = progress and sys.stderr.isatty()
    bar = tqdm(total=sum(map(cost, tuning)) + protocols * sum(map(cost, grid)), disable=not terminal,
               dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
               desc=f"{sweep.name}" + (f" [shard {shard[0]}/{shard[1]}]" if shard[1] > 1 else ""))
    trainer = _Stage(out, problems, engine, lockstep_max, data_dir, download, progress, terminal, bar, counts,
                     tuned=sweep.tune is not None, remote=remote, lockstep_mode=lockstep_mode, threads=threads)
    try:
        if sweep.tune:
            trainer.train(tuning, planned, "tuning ")
        comparison, waiting = sweep.comparison(score_of(out, sweep.tune.metric if sweep.tune else ""), grid)
        planned = len(tuning) + len(comparison) + len(waiting)
        bar.total = bar.n + sum(map(cost, comparison)) + sum(map(cost, waiting))
        trainer.train(comparison, planned, "")
        counts["waiting"] = len(waiting)
        bar.set_postfix_str(f"{trainer.finished}/{planned} runs | {_tally(counts)}", refresh=True)
    finally:
        bar.close()
    if waiting:
        _note(f"{len(waiting)} comparison runs wait for tuning runs that are not recorded yet (being trained by "
              "another shard, or failed to record): rerun this command once they are, to train them")
    return counts


def score_of(out: Path, metric: str) -> Callable[[RunSpec], float | None]:
    """A tuning run's score (`tune.score`) read from its record, None while it is not complete."""
    from initbench.record import record_dir

    def score(spec: RunSpec) -> float | None:
        record = RunRecord(record_dir(spec, out))
        if not record.complete:
            return None
        try:
            summary, config = record.summary(), record.config()
        except (OSError, ValueError):
            return None
        return tune_score(summary["status"], summary.get(metric), config.get("data", {}).get("num_classes"))

    return score


class _Stage:
    """Trains lists of runs (a stage) unit by unit, advancing the shared bar and tallying outcomes."""

    def __init__(self, out: Path, problems: dict[tuple[str, str], Problem], engine: str, lockstep_max: int,
                 data_dir: Path | None, download: bool, progress: bool, terminal: bool, bar: Any,
                 counts: dict[str, int], tuned: bool = False, remote: tuple[float, float] | None = None,
                 lockstep_mode: str = "auto", threads: int = 1) -> None:
        self.out, self.problems, self.engine, self.lockstep_max = out, problems, engine, lockstep_max
        self.lockstep_mode, self.threads = lockstep_mode, threads  # threads: what a Ray task trains with
        self.remote = remote  # Ray: (CPUs, GPUs) per task; None: train here
        self.tuned = tuned  # lines name each run's lr
        self.data_dir, self.download, self.progress, self.terminal = data_dir, download, progress, terminal
        self.bar, self.counts = bar, counts

    @property
    def finished(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "waiting")

    def train(self, runs: tuple[RunSpec, ...], planned: int, stage: str) -> None:
        from initbench.execute.units import claim_and_run, claim_and_run_group
        from initbench.record import record_dir

        todo = []
        for r in runs:
            where = record_dir(r, self.out)
            clear_orphan_lock(where)  # a process killed right after finishing a run leaves its lock file behind
            if RunRecord(where).complete:
                self.counts["skipped"] += 1
                self.bar.update(math.prod(run_cost(r, self.problems[(r.dataset, r.model)])))
            else:
                todo.append(r)
        if self.remote is not None:
            self._train_remote(units(todo, self.problems, self.engine, self.lockstep_max), planned, stage)
            return
        bar, counts = self.bar, self.counts
        for unit in units(todo, self.problems, self.engine, self.lockstep_max):
            steps, per_step = run_cost(unit[0], self.problems[(unit[0].dataset, unit[0].model)])
            per_step *= len(unit)  # a group's step is every member's step
            start = bar.n

            def advance(step: int, start: float = start, steps: int = steps, per_step: float = per_step) -> None:
                bar.update(max(0.0, start + min(step, steps) * per_step - bar.n))

            head = unit[0]
            what = f"{head.init} seed {head.seed}" if len(unit) == 1 else f"{len(unit)} runs seed {head.seed}"
            bar.set_postfix_str(f"{self.finished}/{planned} runs | {_tally(counts) or 'first run'} | "
                                f"{stage}{head.problem} {what}", refresh=True)
            step_report = advance if self.terminal else None
            if not self._lockstep(unit):
                _, summary, outcome = claim_and_run(head, self.out, progress=False, data_dir=self.data_dir,
                                                    download=self.download, keep_going=True, on_step=step_report)
                done = [(head, summary, outcome)]
            else:
                done = [(spec, summary, outcome) for spec, _, summary, outcome in claim_and_run_group(
                    unit, self.out, progress=False, data_dir=self.data_dir, download=self.download,
                    on_step=step_report, note=_note, keep_going=True, lockstep_mode=self.lockstep_mode)]
            bar.update(max(0.0, start + steps * per_step - bar.n))  # a run that diverged early: to its end
            self._tally(done, planned, stage)

    def _lockstep(self, unit: list[RunSpec]) -> bool:
        return self.engine != "sequential" and not self.problems[(unit[0].dataset, unit[0].model)].not_lockstep

    def _tally(self, done: list[tuple[RunSpec, dict[str, Any], str]], planned: int, stage: str) -> None:
        for spec, summary, outcome in done:
            kind = {"done": "skipped", "busy": "busy", "lost": "lost"}.get(outcome) or summary["status"]
            self.counts[kind] += 1
            if self.progress and not self.terminal:  # a log, not a terminal: one line per run, as it finishes
                print(f"[{self.finished}/{planned}] {stage}{_run_line(spec, summary, outcome, self.tuned)}",
                      flush=True)

    def _train_remote(self, todo: list[list[RunSpec]], planned: int, stage: str) -> None:
        """Ray: the driver claims every run, submits each unit as a task and writes each record as it returns."""
        from initbench.execute import ray as ray_executor
        from initbench.record import run_dir_for

        claims, submitted = Claims(), []
        try:
            for unit in todo:
                mine = [s for s in unit if claims.take(run_dir_for(s, self.out)) is not None]
                self._tally([(s, {}, "busy") for s in unit if s not in mine], planned, stage)
                if mine:
                    submitted.append(mine)
            cost = {id(u): math.prod(run_cost(u[0], self.problems[(u[0].dataset, u[0].model)])) * len(u)
                    for u in submitted}

            def finished(unit: list[RunSpec], results: list[tuple[RunSpec, dict[str, Any] | None]]) -> None:
                self._tally([(s, summary or {}, "trained" if summary else "lost") for s, summary in results],
                            planned, stage)
                tasks = f"{len(submitted)} task{'s' * (len(submitted) != 1)} on Ray"
                self.bar.set_postfix_str(f"{self.finished}/{planned} runs | {_tally(self.counts) or 'first run'} | "
                                         f"{stage}{tasks}", refresh=False)
                self.bar.update(cost[id(unit)])

            ray_executor.run_units(submitted, self._lockstep, self.out, self.data_dir, self.download,
                                   self.remote[0], self.remote[1], finished, _note, self.lockstep_mode,
                                   self.threads)
        finally:
            claims.release()


def _note(message: str) -> None:
    print(f"initbench: {message}", file=sys.stderr)


def _tally(counts: dict[str, int]) -> str:
    return " ".join(f"{counts[k]} {k}" for k in ("ok", "diverged", "collapsed", "failed") if counts[k])


def _run_line(spec: RunSpec, summary: dict[str, Any], outcome: str, show_lr: bool = False) -> str:
    """`digits_mlp kaiming_normal seed 3: ok val 97.30 (1.2 s)`, validation accuracy in points (with `show_lr`:
    `... seed 3 lr 0.01: ...`)."""
    head = f"{spec.problem} {spec.init} seed {spec.seed}" + (f" lr {spec.lr:g}" if show_lr else "")
    if outcome != "trained":
        said = {"done": "already complete", "busy": "being trained elsewhere", "lost": "lost (its task failed after "
                "retries; a rerun trains it)"}
        return f"{head}: {said[outcome]}"
    val = summary.get("val_acc_final")
    detail = f" val {val * 100:.2f}" if isinstance(val, int | float) else ""
    if summary.get("diverged_step") is not None:
        detail = f" at step {summary['diverged_step']}{detail}"
    if summary["status"] == "failed":
        detail = f" ({str(summary.get('error', ''))[:80]})"
    return f"{head}: {summary['status']}{detail} ({summary.get('wall_time_s', 0):.1f} s)"


def completed(sweep: Sweep, out: Path, shard: tuple[int, int] = (1, 1)) -> tuple[list[tuple[RunSpec, bool]],
                                                                              tuple[RunSpec, ...]]:
    """The shard's runs planned so far (the tuning runs, then each grid run at its chosen lr where it is known), each
    with whether its record is complete; and the grid runs whose lr waits for tuning runs."""
    from initbench.record import record_dir

    grid = sweep.shard(*shard)
    comparison, waiting = sweep.comparison(score_of(out, sweep.tune.metric if sweep.tune else ""), grid)
    runs = sweep.shard(*shard, runs=sweep.tuning) + comparison
    return [(r, RunRecord(record_dir(r, out)).complete) for r in runs], waiting


def progress_text(sweep: Sweep, out: Path) -> str:
    """`done/planned` over the whole study (both stages, where stage 2's lrs are known)."""
    rows, waiting = completed(sweep, out)
    return f"{sum(d for _, d in rows)}/{len(rows) + len(waiting)}"


def dry_run(sweep: Sweep, out: Path, shard: tuple[int, int]) -> None:
    """Every run this shard would train, stage by stage, with whether it is done; then the counts."""
    rows, waiting = completed(sweep, out, shard)
    tuning = {r.run_id for r in sweep.tuning}
    stages = [("tuning", [(r, d) for r, d in rows if r.run_id in tuning]),
              ("comparison", [(r, d) for r, d in rows if r.run_id not in tuning])]
    for stage, stage_rows in stages if sweep.tune else stages[1:]:
        for r, done in stage_rows:
            lr = f"  lr {r.lr:g}" if sweep.tune else ""
            print(f"{'done   ' if done else 'pending'}  {stage + '  ' if sweep.tune else ''}{r.problem:<24} "
                  f"{r.init:<40} seed {r.seed}{lr}  {r.run_id}")
    for r in waiting:
        print(f"waiting  comparison  {r.problem:<24} {r.init:<40} seed {r.seed}  lr chosen after the tuning runs")
    done = sum(d for _, d in rows)
    if sweep.tune:
        n_tune, n_cmp = len(stages[0][1]), len(stages[1][1]) + len(waiting)
        print(f"stage 1 (tuning, {sweep.tune.describe()}): {n_tune} runs ({sum(d for _, d in stages[0][1])} done); "
              f"stage 2 (comparison on seeds {', '.join(sorted({str(r.seed) for r in sweep.runs}, key=int))}, "
              f"{' and '.join(sweep.tune.protocols)} lr): {n_cmp} runs ({sum(d for _, d in stages[1][1])} done"
              f"{f', {len(waiting)} waiting for their lr' if waiting else ''}); out: {out}")
    else:
        print(f"{len(rows)} runs ({done} done) of {len(sweep.runs)} in the grid; out: {out}")
