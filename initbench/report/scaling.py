"""How each scheme's outcome changes along an axis of the study (a model parameter varied with `vary:`): per scheme
and value the ranking metric's mean with its interval, the failure rate and the verdict against the problem's
reference; per scheme the first value at which most of its runs fail; a plot and `scaling.csv`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from initbench.plan.axes import Axis
from initbench.report.answers import POINTS, names
from initbench.report.stats import MOST, Ranking

COLUMNS = ["axis", "value", "problem", "init", "n", "mean", "ci_low", "ci_high", "failure_rate", "verdict", "delta",
           "delta_ci_low", "delta_ci_high", "p_holm", "reference"]


def scaling_table(runs: pd.DataFrame, ranking: Ranking, axes: tuple[Axis, ...]) -> pd.DataFrame:
    """One row per (axis, value, scheme), the values in the order the sweep file gives them."""
    if not axes or "axis" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    keys = runs.loc[runs["axis"].notna(), ["problem", "axis", "axis_value"]].drop_duplicates("problem")
    table = ranking.per_problem.merge(keys.rename(columns={"axis_value": "value"}), on="problem")
    order = {(a.name, v): i for a in axes for i, v in enumerate(a.values)}
    table["order"] = [order.get((a, v), math.inf) for a, v in zip(table["axis"], table["value"], strict=True)]
    table = table.sort_values(["axis", "order", "rank"]).reset_index(drop=True)
    return table[COLUMNS]


def problem_order(runs: pd.DataFrame, axes: tuple[Axis, ...]) -> list[str]:
    """The problems in reading order: by name, except that the problems of one axis follow its values' order
    (depth 2, 8, 32; not 2, 32, 8)."""
    position = {(a.name, str(v)): i for a in axes for i, v in enumerate(a.values)}
    first = runs.drop_duplicates("problem").set_index("problem")
    axis = first["axis"] if "axis" in first else pd.Series(None, index=first.index)

    def key(problem: str) -> tuple:
        name = axis.get(problem)
        if not isinstance(name, str):
            return (problem, 0)
        return (f"{problem.split('[')[0]}[{name}]", position.get((name, str(first.at[problem, "axis_value"])), 0))

    return sorted(first.index, key=key)


def first_failures(table: pd.DataFrame, axis: Axis) -> dict[str, Any]:
    """Per scheme, the first value (in the axis's order) at which most of its runs failed; None: none did."""
    rows = table[table["axis"] == axis.name]
    return {init: next((v for v in axis.values if (g["value"] == v).any()
                        and g.loc[g["value"] == v, "failure_rate"].iloc[0] > MOST), None)
            for init, g in rows.groupby("init", sort=False)}


def lines(table: pd.DataFrame, axis: Axis) -> list[str]:
    """The axis's answer in words: per scheme, where it stops training, and what beats the reference where."""
    rows = table[table["axis"] == axis.name]
    failing = first_failures(table, axis)
    trained = [i for i, v in failing.items() if v is None]
    out = []
    if trained:
        out.append(f"**Trained at every {axis.key}** ({', '.join(map(str, axis.values))}): {', '.join(trained)}.")
    stopped = [f"{i} from {axis.key} {v}" for i, v in failing.items() if v is not None]
    if stopped:
        out.append(f"**Most runs fail** (diverged, collapsed or failed): {', '.join(stopped)}.")
    for value in axis.values:
        here = rows[rows["value"] == value]
        better = here[here["verdict"] == "better"]
        if len(here) and len(better):
            ref = here["reference"].iloc[0]
            out.append(f"At {axis.key} {value}, **better** than {ref}: {names(better, True)}.")
    return out


def plot_scaling(plt: Any, axis: Axis, table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Per scheme the metric's mean (points, 95% interval) against the axis value; a cross where most runs failed.
    The axis is logarithmic where numeric values span a decade."""
    rows = table[table["axis"] == axis.name]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in axis.values)
    x_of = {v: (float(v) if numeric else i) for i, v in enumerate(axis.values)}
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for init, g in rows.groupby("init", sort=False):
        g = g.sort_values("value", key=lambda s: s.map(x_of))
        x = g["value"].map(x_of).to_numpy(dtype=float)
        mean = g["mean"].to_numpy(dtype=float) * POINTS
        low = (g["mean"] - g["ci_low"]).to_numpy(dtype=float) * POINTS
        high = (g["ci_high"] - g["mean"]).to_numpy(dtype=float) * POINTS
        line = ax.errorbar(x, mean, yerr=np.nan_to_num(np.vstack([low, high])), marker="o", ms=4, capsize=3,
                           label=init)
        failed = g["failure_rate"].to_numpy(dtype=float) > 0.5
        ax.scatter(x[failed], mean[failed], marker="x", s=80, color=line[0].get_color(), zorder=4)
    if numeric and min(axis.values) > 0 and max(axis.values) / min(axis.values) >= 10:
        ax.set_xscale("log", base=2 if all(float(v).is_integer() for v in axis.values) else 10)
    ax.set_xticks(list(x_of.values()), [str(v) for v in axis.values])
    ax.set(xlabel=axis.key, ylabel=f"{metric}, accuracy points (mean, 95% CI)", ylim=(0, POINTS),
           title=f"{axis.model}: {metric} against {axis.key} (x: most runs failed)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
