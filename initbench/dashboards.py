"""Weights & Biases: a dashboard run per training run, the report as a run, and W&B sweep configs.

The CSV record stays the source of truth; W&B mirrors it. wandb is imported only here and only
when asked for, so `--logger csv` never loads it. Without credentials (or with WANDB_MODE set)
runs go to offline mode, to be uploaded later with `wandb sync`.
"""

from __future__ import annotations

import dataclasses
import netrc
import os
import re
import sys
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError

STEP_METRIC = "trainer/global_step"  # the x-axis Lightning's WandbLogger uses; charts line up across runs
_BAD_PROJECT = re.compile(r"[/\\#?%:]")
_told_offline: dict[str, bool] = {}


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise InitbenchError("--logger wandb needs the wandb package: pip install 'initbench[wandb]'") from None
    return wandb


def _mode() -> str:
    """WANDB_MODE if set; online with credentials; offline otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def check_settings(project: str, directory: Path) -> None:
    """Fail early, in one line, on a project name W&B rejects or a folder it cannot write."""
    if not project or _BAD_PROJECT.search(project) or len(project) > 128:
        raise InitbenchError(f"bad W&B project name {project!r}: 1-128 characters, none of / \\ # ? % :")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".initbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InitbenchError(f"cannot write W&B files to {directory}: {exc.strerror or exc}") from None


def _init(directory: Path, **kwargs: Any) -> Any:
    wandb = _wandb()
    check_settings(kwargs["project"], directory)
    mode = _mode()
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    try:
        run = wandb.init(dir=str(directory), mode=mode, settings=settings, reinit="finish_previous", **kwargs)
    except Exception as exc:
        if mode != "online":
            raise InitbenchError(f"W&B could not start a run: {str(exc).splitlines()[0]}") from None
        print(f"initbench: W&B online start failed ({str(exc).splitlines()[0][:80]}); logging offline",
              file=sys.stderr)
        mode = "offline"
        run = wandb.init(dir=str(directory), mode=mode, settings=settings, reinit="finish_previous", **kwargs)
    if mode == "offline" and not _told_offline.get(str(directory)):
        _told_offline[str(directory)] = True
        print(f"initbench: W&B is offline (no credentials or WANDB_MODE=offline); upload later with "
              f"`wandb sync {directory / 'wandb'}/offline-run-*`", file=sys.stderr)
    return run


def wandb_dir(out: Path) -> Path:
    return Path(os.environ.get("WANDB_DIR") or Path(out) / "wandb")


def train_logger(spec: Any, out: Path, manifest: Any, config: dict[str, Any]) -> Any:
    """A Lightning WandbLogger over a run named init-seed in group experiment/dataset-model."""
    from lightning.pytorch.loggers import WandbLogger

    from initbench.inits import parse_init
    from initbench.spec import parse_call

    init_name, model_name = parse_init(spec.init).name, parse_call(spec.model, "model")[0]
    run = _init(
        wandb_dir(out), project=spec.wandb_project, entity=spec.wandb_entity,
        group=f"{spec.experiment}/{spec.problem}", name=f"{spec.init}-seed{spec.seed}", job_type="train",
        tags=[init_name, model_name, spec.dataset], id=f"{spec.run_id}-{os.getpid()}",
        config={**dataclasses.asdict(spec), "run_id": spec.run_id, "init_name": init_name,
                "model_name": model_name, "problem": spec.problem, "nonlinearity": manifest.nonlinearity,
                "init_manifest": manifest.summary(), "parameters": config["parameters"], "data": config["data"]},
    )
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
    return WandbLogger(experiment=run)


def finish_train_logger(logger: Any, summary: dict[str, Any]) -> None:
    """Final numbers and status into the run summary, then close it so the next run never merges into it."""
    keys = ("status", "test_acc", "test_loss", "best_val_acc", "best_val_step", "val_acc_final", "diverged_step",
            "steps", "wall_time_s", "images_per_s", "error")
    run = logger.experiment
    run.summary.update({k: summary[k] for k in keys if summary.get(k) is not None})
    run.summary.update({"test/acc": summary.get("test_acc"), "test/loss": summary.get("test_loss")})
    run.finish(exit_code=0 if summary["status"] != "failed" else 1)


def log_report(ranking: Any, plots: dict[str, list[Path]], results_dir: Path, project: str,
               entity: str | None, metric: str, experiment: str) -> list[str]:
    """One run with job_type=report per problem, in that problem's group: the ranking as a wandb.Table,
    a bar chart of the ranking metric, and the report's plots. Returns the W&B run directories."""
    wandb = _wandb()
    dirs = []
    for problem, table in ranking.per_problem.groupby("problem", sort=True):
        run = _init(wandb_dir(results_dir), project=project, entity=entity, group=f"{experiment}/{problem}",
                    name=f"report-{metric}", job_type="report", tags=["report", metric],
                    config={"metric": metric, "problem": problem, "results_dir": str(results_dir)})
        frame = table.drop(columns=["problem"])
        wb_table = wandb.Table(dataframe=frame.reset_index(drop=True))
        run.log({"ranking": wb_table,
                 "ranking_chart": wandb.plot.bar(wb_table, "init", "mean", title=f"{problem}: mean {metric}"),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots.get(problem, [])}})
        best = table.iloc[0]
        run.summary.update({"best_init": best["init"], f"best_{metric}": float(best["mean"]),
                            "reference": best["reference"],
                            "schemes": len(table)})
        dirs.append(run.dir)
        run.finish()
    return dirs


def emit_sweep_config(sweep: Any, path: Path, out: Path, project: str) -> dict[str, Any]:
    """A W&B sweep (grid) whose agents call `initbench run` with one grid point each."""
    import yaml

    first = sweep.runs[0]
    varying = ("init", "model", "dataset", "seed")
    shared = {f.name: getattr(first, f.name) for f in dataclasses.fields(first)
              if f.compare and f.name not in varying}
    for r in sweep.runs:
        differs = [k for k, v in shared.items() if getattr(r, k) != v]
        if differs:
            raise InitbenchError(f"cannot express per-model or per-dataset settings ({', '.join(differs)}) in a W&B "
                                 "grid, whose parameters vary independently: split the sweep file")
    values = {k: list(dict.fromkeys(getattr(r, k) for r in sweep.runs)) for k in varying}
    parameters: dict[str, Any] = {k: {"values": v} for k, v in values.items()}
    parameters.update({k: {"value": v} for k, v in shared.items() if v is not None})
    entity = first.wandb_entity
    config = {
        # inside an agent, wandb uses the sweep's project and entity, not those passed to wandb.init
        "project": project, **({"entity": entity} if entity else {}),
        "name": sweep.name, "method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": parameters,
        "command": ["initbench", "run", "--logger", "wandb", "--wandb-project", project, "--experiment", sweep.name,
                    "--out", str(out), "--no-progress", "${args}"],
    }
    header = (f"# W&B sweep for initbench: `wandb sweep {path.name}` (needs a W&B server), then\n"
              "# `wandb agent ENTITY/PROJECT/SWEEP_ID` on each machine.\n")
    try:
        path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    except OSError as exc:
        raise InitbenchError(f"cannot write the W&B sweep config to {path}: {exc.strerror or exc}") from None
    return config
