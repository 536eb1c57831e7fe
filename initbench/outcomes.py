"""What `run`, `sweep` and `report` print about their results: a run's outcome (its figures in accuracy points, the
record, a hint after a collapse or divergence, W&B for a complete run) and each problem's answer. Light: torch
loads only where a complete run is logged to W&B."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from initbench.spec import RunSpec, next_lr, tuned_lrs


def tell_run(out: Path, spec: RunSpec, run_dir: Path, summary: dict[str, Any], outcome: str) -> int:
    """What `run` prints: the outcome, the test figures and where the record is; exit 1 for a failed run."""
    from initbench.record import RunRecord

    if outcome == "done":
        when = RunRecord(run_dir).recorded_at.strftime("%Y-%m-%d %H:%M")
        print(f"already complete (recorded {when}): {run_dir}\n  nothing was trained; --force trains it again")
        if "wandb" in spec.log.loggers:
            print(_wandb_for_complete(spec, out, run_dir))
    acc = summary.get("test_acc")
    print(f"{spec.problem} / {spec.init} / seed {spec.seed}: {summary['status']}"
          + (f" at step {summary['diverged_step']}" if "diverged_step" in summary else ""))
    if summary["status"] == "failed":
        print(f"  error: {summary.get('error')}")
    took = f"{summary.get('steps', 0)} steps in {summary.get('wall_time_s')} s"
    print(f"  test acc {_points(acc)}   best val acc {_points(summary.get('best_val_acc'))} (accuracy points)   "
          f"test loss {_f(summary.get('test_loss'))}   {took}")
    print(f"  record: {run_dir}")
    if summary["status"] in ("collapsed", "diverged"):
        model = spec.model_call[0]
        where = ("the next smaller lr in its tuning" if tuned_lrs(model, spec.dataset) and next_lr(
            model, spec.dataset, spec.lr) in tuned_lrs(model, spec.dataset) else "a third of this one")
        print(f"  hint: it {summary['status']} at lr {spec.lr:g}; try --lr {next_lr(model, spec.dataset, spec.lr):g} "
              f"({where}), or another init")
    return 1 if summary["status"] == "failed" else 0


def _wandb_for_complete(spec: RunSpec, out: Path, run_dir: Path) -> str:
    """A complete run asked for with --logger wandb: logged from its record unless it is already in this W&B
    project, or when a W&B agent handed it out (the agent waits for a run); otherwise said why not."""
    from initbench import dashboards

    project = spec.log.wandb_project
    from initbench.record import RunRecord

    logged = [r for r in RunRecord(run_dir).wandb_runs() if r.get("project") == project]
    if logged and not os.environ.get("WANDB_SWEEP_ID"):
        last = logged[-1]
        if last.get("offline"):
            saved = dashboards.wandb_dir(out) / "wandb"
            return (f"  not logged to W&B again: it was saved offline for project {project} (run {last['id']}), "
                    f"not uploaded; `wandb login`, then `wandb sync {saved}/offline-run-*` uploads it")
        return (f"  not logged to W&B again: it is already in project {project} (run {last['id']}); "
                "--force trains and logs it again")
    dashboards.log_from_record(spec, out, run_dir)
    return "  logged to W&B from the record (its config says from_record: true)"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _points(x: float | None) -> str:
    """An accuracy in points, as the report gives it."""
    return "-" if x is None else f"{x * 100:.2f}"


def print_answers(answers: dict[str, list[str]]) -> None:
    """Each problem's answer, as the report opens with it."""
    for problem, lines in answers.items():
        print(problem)
        for line in lines:
            print(f"  {line}")
