"""Run records -> one DataFrame of runs, curves and step-0 gradient norms (the report never trains)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from initbench.errors import InitbenchError
from initbench.results import CONFIG, MANIFEST, METRICS, STATUSES, SUMMARY

# Spec fields that are not training settings: the grid's own axes, seeds, logging.
NOT_SETTINGS = ("model", "init", "dataset", "seed", "init_seed", "data_seed", "log_every", "loggers", "experiment",
                "wandb_project", "wandb_entity")


@dataclass
class Study:
    """Everything the report reads from a results folder."""

    runs: pd.DataFrame
    curves: pd.DataFrame  # long form: run_id, step, val_acc, train_loss
    layers: pd.DataFrame  # long form: run_id, step, layer, grad_norm, update_ratio (model order, then "total")
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, str]] = field(default_factory=list)
    split: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # dataset_model -> setting -> values

    @property
    def grads0(self) -> pd.DataFrame:
        """Per-layer gradient norms at step 0 (the init's signature)."""
        g = self.layers[self.layers["step"] == 0]
        return g[["run_id", "layer", "grad_norm"]].dropna()


def load_study(results_dir: Path) -> Study:
    """Read every run record under `results_dir`; unfinished, corrupt or duplicate records are listed, not fatal."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InitbenchError(f"results folder {results_dir} does not exist")
    rows, curves, layers, skipped, versions = [], [], [], [], []
    seen: dict[str, Path] = {}
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
        run_id = canonical_id(spec) or config.get("run_id", run_dir.name)
        if run_id in seen:
            skipped.append(f"{rel}: the same run as {seen[run_id]} (a copy; counted once)")
            continue
        seen[run_id] = rel
        rows.append(_run_row(run_id, rel, config, spec, summary))
        if config.get("versions") not in versions:
            versions.append(config.get("versions"))
        if len(metrics) and "step" in metrics:
            c = metrics[["step"]].assign(run_id=run_id,
                                         val_acc=metrics.get("val/acc"), train_loss=metrics.get("train/loss"))
            curves.append(c.dropna(subset=["val_acc", "train_loss"], how="all"))
            layers.append(_layer_metrics(run_id, metrics, _layer_order(run_dir)))
    if not rows:
        detail = f" ({len(skipped)} unfinished or corrupt)" if skipped else ""
        raise InitbenchError(f"no complete run records under {results_dir}{detail}")
    runs = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["step", "run_id", "val_acc", "train_loss"])
    layers = [df for df in layers if len(df)]
    layers_df = pd.concat(layers, ignore_index=True) if layers else pd.DataFrame(
        columns=["run_id", "step", "layer", "grad_norm", "update_ratio"])
    runs, split = _name_problems(runs)
    runs = _add_curve_metrics(runs, curves_df)
    sweep_file = results_dir / "sweep.json"
    settings = json.loads(sweep_file.read_text()).get("source", {}) if sweep_file.exists() else {}
    return Study(runs, curves_df, layers_df, skipped, settings, versions, split)


def canonical_id(spec: dict[str, Any]) -> str | None:
    """The run's id in today's canonical spelling, so that a run recorded under two spellings (or by an
    earlier version) counts once; None when the stored spec no longer resolves (e.g. a plug-in is gone)."""
    from initbench.runner import RunSpec

    try:
        return RunSpec.from_record(spec).run_id
    except (InitbenchError, TypeError, ValueError):
        return None


def display_init(init: Any) -> str:
    """An init as the report names it: its canonical spelling where it still resolves, else as written."""
    from initbench.inits import canonical_init, parse_init

    try:
        return canonical_init(init)
    except InitbenchError:
        try:
            return str(parse_init(init))
        except InitbenchError:
            return str(init)


def _layer_order(run_dir: Path) -> list[str]:
    """Parameter names in model order, from the run's init manifest."""
    try:
        return [r["name"] for r in json.loads((run_dir / MANIFEST).read_text())["records"]]
    except (OSError, ValueError, KeyError):
        return []


def _layer_metrics(run_id: str, metrics: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """grad_norm/<layer> and update_ratio/<layer> columns -> long form, layers in model order."""
    frames = []
    for stat in ("grad_norm", "update_ratio"):
        cols = [c for c in metrics.columns if c.startswith(stat + "/")]
        if not cols:
            continue
        wide = metrics[["step", *cols]].dropna(subset=cols, how="all")
        long = wide.melt(id_vars="step", var_name="layer", value_name=stat)
        long["layer"] = long["layer"].str.slice(len(stat) + 1)
        frames.append(long.set_index(["step", "layer"]))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, axis=1).reset_index()
    known = [*order, "total"]
    df["order"] = df["layer"].map({name: i for i, name in enumerate(known)})
    df = df.dropna(subset=["order"]) if order else df.assign(order=0)
    df = df.sort_values(["order", "step"], kind="stable").assign(run_id=run_id)
    return df.reindex(columns=["run_id", "step", "layer", "grad_norm", "update_ratio"])  # a missing stat: NaN


def _run_row(run_id: str, rel: Path, config: dict, spec: dict, summary: dict) -> dict[str, Any]:
    from initbench.spec import format_call, parse_call

    data = config.get("data", {})
    settings = {k: v for k, v in spec.items() if k not in NOT_SETTINGS}
    return {
        "run_id": run_id, "experiment": spec.get("experiment"), "dataset": spec["dataset"],
        "model": format_call(*parse_call(spec["model"], "model")),
        "init": display_init(spec["init"]), "seed": spec["seed"], "status": summary["status"],
        "test_acc": summary.get("test_acc"), "test_loss": summary.get("test_loss"),
        "best_val_acc": summary.get("best_val_acc"), "val_acc_final": summary.get("val_acc_final"),
        "train_loss_final": summary.get("train_loss_final"), "diverged_step": summary.get("diverged_step"),
        "steps": summary.get("steps"), "epochs": spec.get("epochs"), "wall_time_s": summary.get("wall_time_s"),
        "images_per_s": summary.get("images_per_s"), "num_classes": data.get("num_classes"),
        "device": config.get("device"), "settings": json.dumps(settings, sort_keys=True), "path": str(rel),
    }


def _name_problems(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, list[Any]]]]:
    """A problem is (dataset, model, every training setting but init and seed): runs whose settings
    differ are never pooled. Where one dataset_model has several settings, each problem's name says
    what differs, e.g. `digits_mlp [epochs=1, lr=0.5]`; `split` lists the differing settings."""
    from initbench.spec import format_value

    runs = runs.copy()
    runs["problem"] = runs["dataset"] + "_" + runs["model"]
    split: dict[str, dict[str, list[Any]]] = {}
    for base, g in runs.groupby("problem", sort=True):
        variants = {s: json.loads(s) for s in g["settings"].unique()}
        if len(variants) == 1:
            continue
        keys = sorted({k for v in variants.values() for k in v})
        seen = {k: sorted({json.dumps(v.get(k)) for v in variants.values()}) for k in keys}
        differing = [k for k in keys if len(seen[k]) > 1]
        split[base] = {k: [json.loads(x) for x in seen[k]] for k in differing}
        names = {s: f"{base} [{', '.join(f'{k}={format_value(v.get(k))}' for k in differing)}]"
                 for s, v in variants.items()}
        runs.loc[g.index, "problem"] = g["settings"].map(names)
    return runs, split


def _add_curve_metrics(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """auc_val_acc: mean val accuracy over the planned evaluations (missing ones, after a divergence, count 0)."""
    val = curves.dropna(subset=["val_acc"]).groupby("run_id")["val_acc"].agg(["sum", "count"])
    runs = runs.merge(val, how="left", left_on="run_id", right_index=True)
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
