"""Weights & Biases: a dashboard run per training run, the report as a run, and W&B sweep configs.

The CSV record stays the source of truth; W&B mirrors it. wandb is imported only here and only
when asked for, so `--logger csv` never loads it. Without credentials (or with WANDB_MODE set)
runs go to offline mode, to be uploaded later with `wandb sync`.
"""

from __future__ import annotations

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


def _init(directory: Path, reinit: str = "finish_previous", **kwargs: Any) -> Any:
    wandb = _wandb()
    check_settings(kwargs["project"], directory)
    mode = _mode()
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    try:
        run = wandb.init(dir=str(directory), mode=mode, settings=settings, reinit=reinit, **kwargs)
    except Exception as exc:
        if mode != "online":
            raise InitbenchError(f"W&B could not start a run: {str(exc).splitlines()[0]}") from None
        print(f"initbench: W&B online start failed ({str(exc).splitlines()[0][:80]}); logging offline",
              file=sys.stderr)
        mode = "offline"
        run = wandb.init(dir=str(directory), mode=mode, settings=settings, reinit=reinit, **kwargs)
    if mode == "offline" and not _told_offline.get(str(directory)):
        _told_offline[str(directory)] = True
        print(f"initbench: W&B is offline (no credentials or WANDB_MODE=offline): runs are saved in "
              f"{directory / 'wandb'}; to see them on W&B, `wandb login` once, then "
              f"`wandb sync {directory / 'wandb'}/offline-run-*`", file=sys.stderr)
    return run


def wandb_dir(out: Path) -> Path:
    return Path(os.environ.get("WANDB_DIR") or Path(out) / "wandb")


def _start_train_run(spec: Any, out: Path, manifest: dict[str, Any], config: dict[str, Any],
                     reinit: str = "finish_previous", **extra: Any) -> Any:
    """A W&B run for one training run, in group experiment/problem/init: W&B's grouped charts then show the mean
    and spread over seeds of each init. The config carries the spec, the data and the manifest's counts; the full
    manifest is a table (`init/manifest`)."""
    from collections import Counter

    wandb = _wandb()
    init = spec.canonical_init  # one spelling per scheme, as in the report
    init_name, model_name = spec.init_spec.name, spec.model_call[0]
    run = _init(
        wandb_dir(out), reinit, project=spec.log.wandb_project, entity=spec.log.wandb_entity,
        group=f"{spec.log.experiment}/{spec.problem}/{init}", name=f"{init}-seed{spec.seed}", job_type="train",
        tags=[init_name, model_name, spec.dataset], id=f"{spec.run_id}-{os.getpid()}",
        config={**spec.to_record(), "run_id": spec.run_id, "init_name": init_name,
                "model_name": model_name, "problem": spec.problem, "nonlinearity": manifest["nonlinearity"],
                "init_manifest": dict(Counter(r["scheme"] for r in manifest["records"])),
                "parameters": config.get("parameters"), "data": config.get("data"), **extra},
    )
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
    columns, rows = manifest_rows(manifest)
    run.log({"init/manifest": wandb.Table(columns=columns, data=rows), STEP_METRIC: 0})
    return run


def manifest_rows(manifest: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The manifest as (columns, rows): one row per parameter, what was applied with which fans, and the result."""
    import json

    from initbench.syntax import format_call

    columns = ["parameter", "type", "role", "shape", "fan_in", "fan_out", "scheme", "distribution", "mean", "std",
               "blocks", "note"]
    rows = [[r["name"], r["module_type"], r["role"], "x".join(map(str, r["shape"])),
             None if r["fan_in"] is None else float(r["fan_in"]), None if r["fan_out"] is None else float(r["fan_out"]),
             format_call(r["scheme"], r["params"]), json.dumps(r.get("distribution")), r["mean"], r["std"],
             ", ".join(r.get("blocks") or []), r["note"]] for r in manifest["records"]]
    return columns, rows


def train_logger(spec: Any, out: Path, manifest: dict[str, Any], config: dict[str, Any]) -> Any:
    """A Lightning WandbLogger over the run's W&B run."""
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(experiment=_start_train_run(spec, out, manifest, config))


# The record's own figures, which W&B's history does not already give: test/acc, test/loss and val/acc (the final
# validation accuracy) are the summary's last logged values and are not repeated under other names.
SUMMARY_KEYS = ("status", "best_val_acc", "best_val_step", "diverged_step", "chance_acc", "steps", "epochs",
                "wall_time_s", "train_time_s", "images_per_s", "error")


def finish_train_logger(logger: Any, summary: dict[str, Any], run_dir: Path) -> None:
    """Final numbers and status into the run summary, the whole record as an artifact, then close the run so the next
    one never merges into it."""
    finish_run(logger.experiment, summary, run_dir)


def member_run(spec: Any, out: Path, manifest: dict[str, Any], config: dict[str, Any]) -> Any:
    """The W&B run of one lockstep member: the same run a sequential run gets, open beside its group's others."""
    return _start_train_run(spec, out, manifest, config, reinit="create_new")


def log_step(run: Any, metrics: dict[str, float], step: int, epoch: int | None = None) -> None:
    """Step metrics into a W&B run on the shared x-axis (as Lightning's WandbLogger logs them)."""
    run.log({**metrics, **({} if epoch is None else {"epoch": epoch}), STEP_METRIC: step})


def finish_run(run: Any, summary: dict[str, Any], run_dir: Path, from_record: bool = False) -> None:
    """Summary, the record as an artifact, finish; then the record notes the W&B run in `wandb.json`, so that asking
    for the complete run again never logs it twice to the same project."""
    from initbench.record import FILES, RunRecord

    wandb = _wandb()
    run.summary.update({k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None})
    record = wandb.Artifact(f"record-{summary['run_id']}", type="run-record",
                            description="the initbench run record: config, manifest, step-0 diagnostics, metrics and "
                                        "summary",
                            metadata={"status": summary["status"], "run_id": summary["run_id"]})
    for name in FILES:
        if (Path(run_dir) / name).is_file():
            record.add_file(str(Path(run_dir) / name))
    run.log_artifact(record)
    entry = {"project": run.project, "entity": run.entity or None, "id": run.id, "group": run.group,
             "offline": run.offline, "from_record": from_record}
    run.finish(exit_code=0 if summary["status"] != "failed" else 1)
    RunRecord(run_dir).note_wandb_run(entry)


def log_from_record(spec: Any, out: Path, run_dir: Path) -> None:
    """A complete record logged to W&B as if it had just been trained (its curves from metrics.csv, its manifest,
    summary and artifact), marked `from_record` in the config: for a run that was trained without W&B, or for a W&B
    agent that hands out a run already complete."""
    import pandas as pd

    from initbench.record import METRICS, RunRecord

    record = RunRecord(run_dir)
    summary = record.summary()
    run = _start_train_run(spec, out, record.manifest(), record.config(), from_record=True)
    if (record.path / METRICS).exists():
        for row in record.metrics().to_dict("records"):
            values = {k: v for k, v in row.items() if k not in ("step", "epoch") and pd.notna(v)}
            if values:
                run.log({**values, "epoch": row.get("epoch"), STEP_METRIC: int(row["step"])})
    finish_run(run, summary, run_dir, from_record=True)


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


def log_probe(frame: Any, plots: list[Path], out: Path, project: str, entity: str | None,
              config: dict[str, Any]) -> None:
    """One run with job_type=probe: the probe's long-form table as a wandb.Table and its plots."""
    wandb = _wandb()
    run = _init(wandb_dir(out), project=project, entity=entity, group=f"probe/{config['dataset']}_{config['model']}",
                name="probe", job_type="probe", tags=["probe"], config=config)
    run.log({"probe": wandb.Table(dataframe=frame.astype({"width": "float", "model_depth": "float"})),
             **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}})
    run.summary.update({"rows": len(frame), "inits": len(config["inits"])})
    run.finish()


def study_project(results_dir: Path) -> tuple[str, str | None]:
    """The W&B project (and entity) a study's runs were logged to: the sweep file's `wandb:` block, else the one most
    of its W&B-logged records name, else the default `initbench`."""
    from collections import Counter

    from initbench.record import CONFIG, RunRecord, study_source

    results_dir = Path(results_dir)
    try:
        source = study_source(results_dir)
        given = source.get("wandb") or {}
        if given.get("project"):
            return str(given["project"]), given.get("entity")
    except (OSError, ValueError, AttributeError):
        pass
    seen: Counter = Counter()
    for config in results_dir.glob(f"*/*/{CONFIG}"):
        try:
            spec = RunRecord(config.parent).config().get("spec", {})
        except (OSError, ValueError):
            continue
        if "wandb" in (spec.get("loggers") or []) and spec.get("wandb_project"):
            seen[(spec["wandb_project"], spec.get("wandb_entity"))] += 1
    return seen.most_common(1)[0][0] if seen else ("initbench", None)


def emit_sweep_config(sweep: Any, path: Path, out: Path, project: str) -> dict[str, Any]:
    """A W&B sweep (grid) whose agents call `initbench run` with one grid point each."""
    import yaml

    from initbench.spec import AXES, SETTINGS

    first = sweep.runs[0]
    shared = {name: getattr(first, name) for name in SETTINGS}
    for r in sweep.runs:
        differs = [k for k, v in shared.items() if getattr(r, k) != v]
        if differs:
            raise InitbenchError(f"cannot express per-model or per-dataset settings ({', '.join(differs)}) in a W&B "
                                 "grid, whose parameters vary independently: split the sweep file")
    values = {k: list(dict.fromkeys(getattr(r, k) for r in sweep.runs)) for k in AXES}
    parameters: dict[str, Any] = {k: {"values": v} for k, v in values.items()}
    parameters.update({k: {"value": v} for k, v in shared.items() if v is not None})
    entity = first.log.wandb_entity
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
