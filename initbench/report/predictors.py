"""What predicted the outcome: each step-0 diagnostic against the ranking metric over a problem's runs.

Per problem and diagnostic (the `step0_*` columns the loader reads from each record), Spearman's rank correlation
between the diagnostic and the run's outcome, with a paired percentile-bootstrap CI over runs and Spearman's test.
A run's outcome is its score in the ranking (`stats.scored`): its metric, chance level for a diverged run (a
collapsed run keeps its chance-level metric); a failed run has none and stays out. The runs of a problem mix inits
and seeds, so a correlation says which step-0 figure ranked the runs as their outcomes did, mostly through the init;
it is evidence of association, not a cause.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from initbench.report.stats import scored
from initbench.train.diagnostics import SUMMARY

LEVEL = 0.95
RESAMPLES = 2000
MIN_RUNS = 6  # fewer runs than this: no correlation is reported
MEANING = {
    "act_rms_ratio": "activation rms, deepest layer over shallowest",
    "dead_frac": "fraction of dead units",
    "grad_norm_spread": "largest layer gradient norm over smallest",
    "grad_norm_total": "gradient norm",
    "loss": "loss",
}


def spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (ties get average ranks): Pearson's r of the ranks; NaN where either is constant."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def spearman_ci(x: np.ndarray, y: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES,
                seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap CI of Spearman's rho, resampling (x, y) pairs (scipy.stats.bootstrap, paired);
    resamples where a side is constant have no rho and are left out."""
    rng = np.random.default_rng(seed)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():  # constant resamples are dropped below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        draws = stats.bootstrap((x, y), spearman, n_resamples=resamples, paired=True, vectorized=True,
                                method="percentile", rng=rng).bootstrap_distribution
    draws = draws[np.isfinite(draws)]
    if len(draws) < resamples / 2:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def outcomes(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's outcome for the correlation, as the ranking scores it (`stats.scored`): its metric, chance level
    for a diverged run, NaN for a failed one."""
    return scored(runs, metric)["score"].astype(float)


def relate(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per problem and diagnostic: runs, rho, its CI, Spearman's p, and the finding in words."""
    rows = []
    for problem, group in runs.groupby("problem", sort=True):
        outcome = outcomes(group, metric)
        for name in SUMMARY:
            column = f"step0_{name}"
            if column not in group:
                continue
            x = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
            y = outcome.to_numpy()
            keep = ~np.isnan(x) & ~np.isnan(y)
            x, y = x[keep], y[keep]
            row: dict[str, Any] = {"problem": problem, "diagnostic": name, "runs": int(keep.sum()), "rho": math.nan,
                                   "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
            if len(x) < MIN_RUNS:
                row["finding"] = f"too few runs with this figure ({len(x)})"
            elif np.unique(x).size == 1 or np.unique(y).size == 1:
                row["finding"] = "the same for every run: says nothing here"
            else:
                row["rho"] = float(spearman(x, y))
                row["ci_low"], row["ci_high"] = spearman_ci(x, y)
                row["p"] = float(stats.spearmanr(x, y).pvalue)
                row["finding"] = _finding(row, metric)
            rows.append(row)
    return pd.DataFrame(rows, columns=["problem", "diagnostic", "runs", "rho", "ci_low", "ci_high", "p", "finding"])


def _finding(row: dict[str, Any], metric: str) -> str:
    if not (row["ci_low"] > 0 or row["ci_high"] < 0):
        return "no link distinguishable from none"
    direction = "higher" if row["rho"] > 0 else "lower"
    strength = "strongly " if abs(row["rho"]) >= 0.5 else ""
    return f"a {direction} {MEANING[row['diagnostic']]} went with a {strength}higher {metric}"


def paragraph(related: pd.DataFrame, metric: str) -> list[str]:
    """One sentence per problem: the diagnostics whose CI excludes 0, strongest first, or that none did."""
    lines = []
    for problem, rows in related.groupby("problem", sort=True):
        found = rows[(rows["ci_low"] > 0) | (rows["ci_high"] < 0)].sort_values("rho", key=abs, ascending=False)
        n = int(rows["runs"].max()) if len(rows) else 0
        if not len(found):
            lines.append(f"{problem}: no step-0 diagnostic ranked the {n} runs by {metric} distinguishably from "
                         "chance (every 95% CI of Spearman's rho includes 0).")
            continue
        parts = [f"{MEANING[r.diagnostic]} (rho {r.rho:+.2f}, 95% CI {r.ci_low:+.2f} to {r.ci_high:+.2f})"
                 for r in found.itertuples()]
        lines.append(f"{problem}: over {n} runs, {metric} went with the step-0 " + "; ".join(parts)
                     + ". Runs of one init share most of their figure, so this is mostly the inits' ranking seen "
                       "at step 0.")
    return lines


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Diverged and collapsed runs with their step-0 evidence."""
    columns = ["problem", "init", "seed", "lr", "status", *(f"step0_{n}" for n in SUMMARY)]
    bad = runs[runs["status"].isin(["diverged", "collapsed"])]
    return bad[[c for c in columns if c in bad]].sort_values(["problem", "init", "seed"]).reset_index(drop=True)


def plot_step0(plt: Any, problem: str, runs: pd.DataFrame, related: pd.DataFrame, metric: str,
               colors: dict[str, Any], path: Path) -> Path:
    """Each step-0 diagnostic (x, log scale where positive) against the run's score (y), one point per run coloured
    by init, titled with its rho and CI: what the correlation table says, seen."""
    shown = [n for n in SUMMARY if f"step0_{n}" in runs and runs[f"step0_{n}"].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(3.6 * max(1, len(shown)), 3.4), squeeze=False)
    score = outcomes(runs, metric)
    rows = related[related["problem"] == problem].set_index("diagnostic")
    for ax, name in zip(axes[0], shown, strict=False):
        x = pd.to_numeric(runs[f"step0_{name}"], errors="coerce").replace([np.inf, -np.inf], np.nan)
        for init in runs["init"].unique():
            mine = runs["init"] == init
            ax.scatter(x[mine], score[mine], s=14, alpha=0.75, color=colors.get(init), label=init)
        if (x.dropna() > 0).all() and x.notna().any() and x.max() / max(x.min(), 1e-300) > 100:
            ax.set_xscale("log")
        title = name
        if name in rows.index and np.isfinite(rows.loc[name, "rho"]):
            r = rows.loc[name]
            title += f"\nrho {r['rho']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        ax.set(title=title, xlabel=f"step 0: {name}", ylabel=metric if ax is axes[0][0] else None)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle(f"{problem}: step-0 diagnostics against the outcome", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
