"""Run records -> one DataFrame of runs, curves and step-0 gradient norms (the report never trains)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from initbench.errors import InitbenchError
from initbench.results import CONFIG, MANIFEST, METRICS, STATUSES, SUMMARY


@dataclass
class Study:
    """Everything the report reads from a results folder."""

    runs: pd.DataFrame
    curves: pd.DataFrame  # long form: run_id, step, val_acc, train_loss
    grads0: pd.DataFrame  # long form: run_id, layer, grad_norm (step 0)
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, str]] = field(default_factory=list)


def load_study(results_dir: Path) -> Study:
    """Read every run record under `results_dir`; unfinished or corrupt records are listed, not fatal."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InitbenchError(f"results folder {results_dir} does not exist")
    rows, curves, grads, skipped, versions = [], [], [], [], []
    for config_path in sorted(results_dir.rglob(CONFIG)):
        run_dir = config_path.parent
        rel = run_dir.relative_to(results_dir)
        try:
            config = json.loads(config_path.read_text())
            spec = config["spec"]
        except (ValueError, KeyError, OSError) as exc:
            skipped.append(f"{rel}: unreadable {CONFIG} ({type(exc).__name__})")
            continue
        if not (run_dir / SUMMARY).exists():
            skipped.append(f"{rel}: no {SUMMARY} (unfinished run; `initbench sweep` reruns it)")
            continue
        try:
            summary = json.loads((run_dir / SUMMARY).read_text())
            if summary.get("status") not in STATUSES:
                raise ValueError("no valid status")
            metrics = pd.read_csv(run_dir / METRICS) if summary["status"] != "failed" else pd.DataFrame()
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            skipped.append(f"{rel}: corrupt record ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        run_id = config.get("run_id", run_dir.name)
        rows.append(_run_row(run_id, rel, config, spec, summary))
        if config.get("versions") not in versions:
            versions.append(config.get("versions"))
        if len(metrics) and "step" in metrics:
            c = metrics[["step"]].assign(run_id=run_id,
                                         val_acc=metrics.get("val/acc"), train_loss=metrics.get("train/loss"))
            curves.append(c.dropna(subset=["val_acc", "train_loss"], how="all"))
            step0 = metrics[metrics["step"] == 0]
            if len(step0):
                g = step0.filter(like="grad_norm/").iloc[0].dropna()
                g.index = [k[len("grad_norm/"):] for k in g.index]
                g = g.reindex([*_layer_order(run_dir), "total"]).dropna()
                grads.append(pd.DataFrame({"run_id": run_id, "layer": g.index, "grad_norm": g.to_numpy(dtype=float)}))
    if not rows:
        detail = f" ({len(skipped)} unfinished or corrupt)" if skipped else ""
        raise InitbenchError(f"no complete run records under {results_dir}{detail}")
    runs = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["step", "run_id", "val_acc", "train_loss"])
    grads_df = pd.concat(grads, ignore_index=True) if grads else pd.DataFrame(columns=["run_id", "layer", "grad_norm"])
    runs = _add_curve_metrics(runs, curves_df)
    sweep_file = results_dir / "sweep.json"
    settings = json.loads(sweep_file.read_text()).get("source", {}) if sweep_file.exists() else {}
    return Study(runs, curves_df, grads_df, skipped, settings, versions)


def _layer_order(run_dir: Path) -> list[str]:
    """Parameter names in model order, from the run's init manifest."""
    try:
        return [r["name"] for r in json.loads((run_dir / MANIFEST).read_text())["records"]]
    except (OSError, ValueError, KeyError):
        return []


def _run_row(run_id: str, rel: Path, config: dict, spec: dict, summary: dict) -> dict[str, Any]:
    from initbench.inits import parse_init
    from initbench.spec import format_call, parse_call

    data = config.get("data", {})
    return {
        "run_id": run_id, "experiment": spec.get("experiment"), "dataset": spec["dataset"],
        "model": format_call(*parse_call(spec["model"], "model")),
        "init": str(parse_init(spec["init"])), "seed": spec["seed"], "status": summary["status"],
        "test_acc": summary.get("test_acc"), "test_loss": summary.get("test_loss"),
        "best_val_acc": summary.get("best_val_acc"), "val_acc_final": summary.get("val_acc_final"),
        "train_loss_final": summary.get("train_loss_final"), "diverged_step": summary.get("diverged_step"),
        "steps": summary.get("steps"), "epochs": spec.get("epochs"), "wall_time_s": summary.get("wall_time_s"),
        "images_per_s": summary.get("images_per_s"), "num_classes": data.get("num_classes"),
        "device": config.get("device"), "path": str(rel),
    }


def _add_curve_metrics(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """auc_val_acc: mean val accuracy over the planned evaluations (missing ones, after a divergence, count 0)."""
    val = curves.dropna(subset=["val_acc"]).groupby("run_id")["val_acc"].agg(["sum", "count"])
    runs = runs.merge(val, how="left", left_on="run_id", right_index=True)
    runs["problem"] = runs["dataset"] + "_" + runs["model"]
    if runs["experiment"].nunique() > 1:
        runs["problem"] = runs["experiment"] + "/" + runs["problem"]
    planned = runs.groupby("problem")["count"].transform("max")
    runs["auc_val_acc"] = runs["sum"] / planned
    return runs.drop(columns=["sum", "count"])


def steps_to_target(runs: pd.DataFrame, curves: pd.DataFrame, target: float | None) -> pd.DataFrame:
    """First step at which val accuracy reaches the target (NaN: never reached, diverged included).
    Default target per problem: 90% of the best val accuracy any run reached there."""
    runs = runs.copy()
    best = runs.groupby("problem")["best_val_acc"].transform("max")
    runs["target"] = target if target is not None else (0.9 * best).round(4)
    val = curves.dropna(subset=["val_acc"]).merge(runs[["run_id", "target"]], on="run_id")
    hit = val[val["val_acc"] >= val["target"]].groupby("run_id")["step"].min()
    runs["steps_to_target"] = runs["run_id"].map(hit)
    return runs
