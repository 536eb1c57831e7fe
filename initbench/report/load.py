"""Run records -> one DataFrame of runs, curves and step-0 gradient norms (the report never trains)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from initbench.errors import InitbenchError
from initbench.record import CONFIG, DIAGNOSTICS, METRICS, STATUSES, STUDY, SUMMARY, RunRecord, study_source
from initbench.report.layers import layer_metrics, layer_order
from initbench.report.tuning import Tuning, split_runs
from initbench.spec import AXES, LOG_FIELDS, PER_RUN

# A stored spec's keys that are not settings runs must share to be compared: the axes, the settings that may differ
# per run, and where curves go (a key from another version counts as a setting).
NOT_SETTINGS = (*AXES, *PER_RUN, *LOG_FIELDS)


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
    partial: list[str] = field(default_factory=list)  # records that entered with some numbers left out, and why
    tuning: Tuning | None = None  # a tuned study: its tuning runs, chosen lrs and the second protocol's runs
    excluded: list[str] = field(default_factory=list)  # whole records outside the study's protocol, and why
    predictors: pd.DataFrame | None = None  # step-0 diagnostics against the outcome (report.predictors.relate)
    # Where the records were made: (versions, device, torch threads) -> runs, and (problem folder, engine) -> runs
    environments: Counter = field(default_factory=Counter)
    engines: Counter = field(default_factory=Counter)
    axes: tuple = ()  # the study's axes (plan.axes.Axis): model parameters varied over values
    claims: pd.DataFrame | None = None  # the claims judged (report.claims), once the report has judged them

    @property
    def grads0(self) -> pd.DataFrame:
        """Per-layer gradient norms at step 0 (the init's signature)."""
        g = self.layers[self.layers["step"] == 0]
        return g[["run_id", "layer", "grad_norm"]].dropna()


NUMBERS = ("test_acc", "test_loss", "best_val_acc", "val_acc_final", "train_loss_final", "diverged_step", "steps",
           "wall_time_s", "images_per_s")  # a summary's numbers: finite ones in range (else damaged), or left out
ACCURACIES = ("test_acc", "best_val_acc", "val_acc_final")  # in [0, 1]
COUNTS = ("diverged_step", "steps")  # whole numbers from 0; the other numbers are at least 0
DIVERGED_LOSSES = ("test_loss", "train_loss_final")  # non-finite in a diverged run's summary: what diverging means


class Damaged(Exception):
    """A record the report cannot use, with the reason."""


def _read_record(run_dir: Path) -> tuple[dict, dict, dict, pd.DataFrame, list[str]]:
    """(config, spec, summary, metrics, problems) of one record; Damaged when it cannot enter the report at all.

    `problems` are what makes a usable record partial: numbers missing or not finite, a truncated or
    unreadable metrics.csv; the report lists them and leaves the affected numbers out.
    """
    record = RunRecord(run_dir)
    try:
        config = record.config()
    except (OSError, ValueError) as exc:
        raise Damaged(f"unreadable {CONFIG} ({type(exc).__name__})") from None
    spec = config.get("spec") if isinstance(config, dict) else None
    if not isinstance(spec, dict):
        raise Damaged(f"{CONFIG} has no run spec")
    for key, kind in (("dataset", str), ("model", str), ("init", str), ("seed", int)):
        if not isinstance(spec.get(key), kind) or isinstance(spec.get(key), bool):
            raise Damaged(f"{CONFIG}: the spec's {key} is {spec.get(key)!r}")
    _check_spec(spec)
    for key in ("data", "versions"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise Damaged(f"{CONFIG}: {key} is a {type(config[key]).__name__}, not a mapping")
    if not (run_dir / SUMMARY).exists():
        raise Damaged(f"no {SUMMARY} (unfinished run; `initbench sweep` reruns it)")
    try:
        summary = record.summary()
    except (OSError, ValueError) as exc:
        raise Damaged(f"unreadable {SUMMARY} ({type(exc).__name__})") from None
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        raise Damaged(f"{SUMMARY} has no valid status")
    problems = []
    for key in NUMBERS:
        value = summary.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Damaged(f"{SUMMARY}: {key} is {value!r}, not a number")
        if not math.isfinite(value):
            if not (summary["status"] == "diverged" and key in DIVERGED_LOSSES):
                problems.append(f"{key} is {value}")
            summary[key] = None
        elif key in ACCURACIES and not 0 <= value <= 1:
            raise Damaged(f"{SUMMARY}: {key} is {value}, outside [0, 1]")
        elif key in COUNTS and (value < 0 or value != int(value)):
            raise Damaged(f"{SUMMARY}: {key} is {value}, not a count")
        elif value < 0:
            raise Damaged(f"{SUMMARY}: {key} is {value}, below 0")
    metrics = pd.DataFrame()
    if summary["status"] != "failed":
        try:
            metrics = record.metrics()
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            problems.append(f"unreadable {METRICS} ({type(exc).__name__})")
        if len(metrics) and "step" not in metrics:
            problems.append(f"{METRICS} has no step column")
            metrics = pd.DataFrame()
        word = _first_word(metrics)
        if word:
            problems.append(f"{METRICS}: {word[0]} holds {word[1]!r}, not a number")
            metrics = pd.DataFrame()
        if len(metrics):
            last, steps = metrics["step"].max(), summary.get("steps")
            if isinstance(steps, int | float) and last < steps and summary["status"] in ("ok", "collapsed"):
                problems.append(f"{METRICS} ends at step {last:g} of {steps:g} (truncated)")
            if ("val/acc" in metrics and metrics["val/acc"].isin([math.inf, -math.inf]).any()) or (
                    "val/acc" in metrics and metrics["val/acc"].isna().all()):
                problems.append(f"{METRICS} has no finite validation accuracy")
    return config, spec, summary, metrics, problems


def load_study(results_dir: Path) -> Study:
    """Read every run record under `results_dir`; unusable ones are listed with the reason (never fatal, never
    hidden), and partial ones enter the report with the affected numbers left out and said so."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InitbenchError(f"results folder {results_dir} does not exist")
    rows, curves, layers, skipped, versions, partial = [], [], [], [], [], []
    environments: Counter = Counter()
    engines: Counter = Counter()
    seen: dict[str, Path] = {}
    run_dirs = sorted({p.parent for name in (CONFIG, SUMMARY, METRICS) for p in results_dir.rglob(name)
                       if not any(part.startswith(".") for part in p.relative_to(results_dir).parts)})
    for run_dir in run_dirs:
        rel = run_dir.relative_to(results_dir)
        try:
            config, spec, summary, metrics, problems = _read_record(run_dir)
        except Damaged as why:
            skipped.append(f"{rel}: {why}")
            continue
        run_id = canonical_id(spec) or str(config.get("run_id", run_dir.name))
        if run_id in seen:
            skipped.append(f"{rel}: the same run as {seen[run_id]} (a copy; counted once)")
            continue
        seen[run_id] = rel
        step0, step0_problem = _step0(run_dir)
        order, order_problem = layer_order(run_dir)
        said = problems + [p for p in (step0_problem, order_problem) if p]  # the last two leave the curves whole
        rows.append({**_run_row(run_id, rel, config, spec, summary), **step0, "partial": "; ".join(said),
                     "curve_whole": not problems})
        if said:
            partial.append(f"{rel}: {'; '.join(said)}")
        if config.get("versions") not in versions:
            versions.append(config.get("versions"))
        environments[environment(config)] += 1
        engine = str(config.get("engine", "sequential"))
        engines[(rel.parent.as_posix(), f"{engine} {config['lockstep_mode']}" if engine == "lockstep" and
                 config.get("lockstep_mode") else engine)] += 1
        if len(metrics) and not problems:  # a partial curve would bias the curve metrics: left out
            c = metrics[["step"]].assign(run_id=run_id,
                                         val_acc=metrics.get("val/acc"), train_loss=metrics.get("train/loss"))
            curves.append(c.dropna(subset=["val_acc", "train_loss"], how="all"))
            layers.append((run_id, metrics, order))
    if not rows:
        detail = f" ({len(skipped)} unfinished or damaged)" if skipped else ""
        raise InitbenchError(f"no complete run records under {results_dir}{detail}")
    runs = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["step", "run_id", "val_acc", "train_loss"])
    for col in ("val_acc", "train_loss"):  # a run that never logged one (diverged at step 0) leaves None there
        curves_df[col] = pd.to_numeric(curves_df[col], errors="coerce")
    layers_df = layer_metrics(layers)
    settings = _sweep_settings(results_dir, skipped)
    sweep = None
    if settings.get("tune") is not None:  # the study's plan, rebuilt to rank exactly the runs it trained
        from initbench.plan.sweep import sweep_from_doc

        sweep = sweep_from_doc(settings, results_dir / STUDY, check=False)
    if sweep is not None:  # a tuned study's problems do not split by lr: each init has its own
        runs["settings"] = [json.dumps({k: v for k, v in json.loads(s).items() if k != "lr"}, sort_keys=True)
                            for s in runs["settings"]]
    from initbench.plan.axes import axes_of

    axes = axes_of(settings) if settings.get("models") is not None else ()
    runs, split = _name_problems(runs, axes)
    runs = _add_curve_metrics(runs, curves_df)
    tuning, excluded = None, []
    if sweep is not None:
        runs, tuning, excluded = split_runs(runs, sweep)
        if not len(runs):
            raise InitbenchError(f"no comparison runs under {results_dir} yet ({len(tuning.runs)} of "
                                 f"{len(sweep.tuning)} tuning runs recorded): run the sweep to the end first")
    return Study(runs, curves_df, layers_df, skipped, settings, versions, split, partial, tuning, excluded,
                 environments=environments, engines=engines, axes=axes)


def environment(config: dict[str, Any]) -> tuple[str, str, str]:
    """Where a record was made, as the report names it: its package versions, device and torch threads."""
    given = config.get("versions")
    versions = ", ".join(f"{k} {v}" for k, v in given.items()) if isinstance(given, dict) else "versions unknown"
    threads = config.get("threads")
    return versions, str(config.get("device") or "device unknown"), (
        f"{threads} torch thread{'s' * (threads != 1)}" if threads is not None else "threads not recorded")


def _sweep_settings(results_dir: Path, skipped: list[str]) -> dict[str, Any]:
    """The sweep file's document from sweep.json ({} for single runs)."""
    try:
        settings = study_source(results_dir)
    except (OSError, ValueError, AttributeError) as exc:
        skipped.append(f"sweep.json: unreadable ({type(exc).__name__}); the sweep file's baseline and tune block are "
                       "not known")
        return {}
    return settings


def canonical_id(spec: dict[str, Any]) -> str | None:
    """The run's id in today's canonical spelling, so that a run recorded under two spellings (or by an
    earlier version) counts once; None when the stored spec no longer resolves (e.g. a plug-in is gone)."""
    from initbench.spec import RunSpec

    try:
        return RunSpec.from_record(spec).run_id
    except (InitbenchError, TypeError, ValueError):
        return None


def _check_spec(spec: dict[str, Any]) -> None:
    """A stored spec is one `initbench run` would accept: every setting's type and range, the names and their syntax
    (the checks of RunSpec.check_names: no torch); Damaged with the reason otherwise."""
    from initbench.spec import RunSpec

    try:
        RunSpec.from_record(spec).check_names()
    except InitbenchError as exc:
        raise Damaged(f"{CONFIG}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise Damaged(f"{CONFIG}: the spec does not make a run ({type(exc).__name__}: {exc})") from None


def _first_word(metrics: pd.DataFrame) -> tuple[str, str] | None:
    """The first cell of metrics.csv that is not a number (column, text): None when every cell is a number or empty
    (nan and inf, a diverged run's losses, are numbers)."""
    for column in metrics.columns:
        values = metrics[column]
        if not pd.api.types.is_numeric_dtype(values):  # a column pandas could not read as numbers
            words = values[values.notna() & pd.to_numeric(values, errors="coerce").isna()]
            if len(words):
                return str(column), str(words.iloc[0])
    return None


def _run_row(run_id: str, rel: Path, config: dict, spec: dict, summary: dict) -> dict[str, Any]:
    from initbench.inits import display_init
    from initbench.syntax import format_call, parse_call

    data = config.get("data", {})
    settings = {k: v for k, v in spec.items() if k not in NOT_SETTINGS}
    return {
        "run_id": run_id, "experiment": spec.get("experiment"), "dataset": spec["dataset"],
        "model": format_call(*parse_call(spec["model"], "model")),
        "init": display_init(spec["init"]), "seed": spec["seed"], "lr": spec.get("lr"), "status": summary["status"],
        "test_acc": summary.get("test_acc"), "test_loss": summary.get("test_loss"),
        "best_val_acc": summary.get("best_val_acc"), "val_acc_final": summary.get("val_acc_final"),
        "train_loss_final": summary.get("train_loss_final"), "diverged_step": summary.get("diverged_step"),
        "steps": summary.get("steps"), "epochs": spec.get("epochs"), "wall_time_s": summary.get("wall_time_s"),
        "images_per_s": summary.get("images_per_s"), "num_classes": data.get("num_classes"),
        "device": config.get("device"), "settings": json.dumps(settings, sort_keys=True), "path": str(rel),
    }


def _step0(run_dir: Path) -> tuple[dict[str, float | None], str | None]:
    """The record's step-0 diagnostics summary as `step0_<name>` columns (None where it has none), and what is wrong
    with its diagnostics file (None: it is whole, or the record is older than step-0 diagnostics and has none)."""
    from initbench.train.diagnostics import SUMMARY as STEP0

    found, problem = {}, None
    try:
        diagnostics = RunRecord(run_dir).diagnostics()
    except OSError:
        diagnostics = {}
    except ValueError as exc:
        diagnostics, problem = {}, f"unreadable {DIAGNOSTICS} ({type(exc).__name__})"
    if not isinstance(diagnostics, dict):
        problem = f"{DIAGNOSTICS} is not a mapping"
    elif not isinstance(diagnostics.get("summary") or {}, dict):
        problem = f"{DIAGNOSTICS}: summary is not a mapping"
    elif diagnostics.get("summary"):
        found = diagnostics["summary"]
    values = {f"step0_{k}": found.get(k) if isinstance(found.get(k), int | float) and not isinstance(found.get(k), bool)
              else None for k in STEP0}
    return values, problem and f"{problem}: its step-0 figures are left out"


def _name_problems(runs: pd.DataFrame, axes: tuple = ()) -> tuple[pd.DataFrame, dict[str, dict[str, list[Any]]]]:
    """A problem is (dataset, model, every training setting but init and seed): runs whose settings
    differ are never pooled. Where one dataset_model has several settings, each problem's name says
    what differs, e.g. `digits_mlp [epochs=1, lr=0.5]`; `split` lists the differing settings. A model on one of the
    study's axes is named by its value there (`digits_mlp[depth=16]`), its runs marked with `axis` and
    `axis_value`."""
    from initbench.plan.axes import find_axis
    from initbench.syntax import format_value

    runs = runs.copy()
    pairs = list(zip(runs["model"], runs["settings"], strict=True))
    on_axis = {p: find_axis(p[0], json.loads(p[1]), axes) for p in set(pairs)} if axes else {}
    found = [on_axis.get(p) for p in pairs]
    runs["axis"] = [f[0].name if f else None for f in found]
    runs["axis_value"] = [f[1] if f else None for f in found]
    model = [f[0].label(f[1]) if f else m for f, m in zip(found, runs["model"], strict=True)]
    runs["problem"] = runs["dataset"] + "_" + pd.Series(model, index=runs.index)
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
    runs.loc[~runs["curve_whole"], "auc_val_acc"] = math.nan  # unknown, not zero
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
    runs["target_known"] = runs["curve_whole"]  # a partial curve cannot say whether the target was reached
    return runs
