"""Ranking statistics: CIs, paired tests, Holm correction, and the per-problem ranking."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from initbench.errors import InitbenchError

METRICS_HIGHER_IS_BETTER = {
    "test_acc": "final test accuracy",
    "best_val_acc": "best validation accuracy",
    "val_acc_final": "final validation accuracy",
    "auc_val_acc": "area under the validation-accuracy curve (mean val accuracy over the planned evaluations)",
}
TESTS = ("wilcoxon", "ttest")
ALPHA = 0.05
BOOTSTRAP = 10_000


def bootstrap_ci(x: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN for fewer than 2 values)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    means = x[np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def iqm(x: np.ndarray) -> float:
    """Interquartile mean (rliable): the mean of the middle 50%."""
    return float(stats.trim_mean(np.asarray(x, dtype=float), 0.25))


def prob_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) for a random run of each, ties counting half (the Mann-Whitney U statistic / (n m))."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(((x > y) + 0.5 * (x == y)).mean())


def paired_test(x: np.ndarray, y: np.ndarray, test: str) -> float:
    """Two-sided p-value of a paired test of x vs y (1.0 when every difference is zero)."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(d) < 2 or np.all(d == 0):
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    if np.all(d == d[0]):  # constant non-zero difference: the t statistic is infinite
        return 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact Wilcoxon signed-rank test can give with n pairs."""
    return 2.0 / 2**n if n > 0 else 1.0


def caveat(n_pairs: int, test: str) -> str:
    if test == "wilcoxon" and smallest_wilcoxon_p(n_pairs) > ALPHA:
        return (f"with {n_pairs} paired seeds the Wilcoxon test cannot go below p = "
                f"{smallest_wilcoxon_p(n_pairs):.3g}, so no difference can be significant at {ALPHA}: "
                "run more seeds (6 or more) before trusting a 'no difference'")
    if n_pairs < 5:
        return (f"only {n_pairs} paired seeds: the test has little power and leans on its assumptions; "
                "treat the p-values as rough")
    return ""


# ---------------------------------------------------------------- ranking


def rank_problem(runs: pd.DataFrame, metric: str, test: str) -> tuple[pd.DataFrame, str]:
    """Rank the inits of one (dataset, model) problem on `metric`, with CIs and tests against the best."""
    runs = runs.copy()
    chance = 1.0 / runs["num_classes"].fillna(10)
    # A diverged run without a measurement scores chance; failed runs have no number and are left out.
    missing = runs[metric].isna() & (runs["status"] == "diverged")
    runs.loc[missing, metric] = chance[missing] if "acc" in metric else 0.0
    ok = runs[runs["status"] != "failed"]
    per_seed = ok.pivot_table(index="seed", columns="init", values=metric, aggfunc="first")
    mean_rank = per_seed.rank(axis=1, ascending=False, method="average").mean()
    rows = []
    for init, g in runs.groupby("init", sort=False):
        x = g.loc[g["status"] != "failed", metric].dropna().to_numpy(dtype=float)
        lo, hi = bootstrap_ci(x)
        reached = g["steps_to_target"].notna()
        rows.append({
            "init": init, "n": len(g), "failed": int((g["status"] == "failed").sum()),
            "diverged": int((g["status"] == "diverged").sum()),
            "mean": x.mean() if len(x) else math.nan, "std": x.std(ddof=1) if len(x) > 1 else math.nan,
            "ci_low": lo, "ci_high": hi, "median": float(np.median(x)) if len(x) else math.nan,
            "iqm": iqm(x) if len(x) >= 4 else math.nan,
            "best_val_acc": g["best_val_acc"].mean(), "auc_val_acc": g["auc_val_acc"].mean(),
            "steps_to_target": g.loc[reached, "steps_to_target"].median(),
            "reached_target": f"{reached.sum()}/{len(g)}",
            "divergence_rate": (g["status"] == "diverged").mean(), "mean_rank": mean_rank.get(init, math.nan),
            "images_per_s": g["images_per_s"].median(),
        })
    table = pd.DataFrame(rows).sort_values(["mean", "mean_rank"], ascending=[False, True], na_position="last")
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    best = table.iloc[0]["init"]
    pvals, pis, pairs = [], [], []
    for init in table["init"]:
        both = per_seed[[best, init]].dropna() if init in per_seed and best in per_seed else pd.DataFrame()
        pairs.append(len(both))
        if init == best:
            pvals.append(math.nan)
            pis.append(math.nan)
            continue
        pvals.append(paired_test(both[best].to_numpy(), both[init].to_numpy(), test) if len(both) else math.nan)
        pis.append(prob_improvement(ok.loc[ok["init"] == best, metric].dropna(),
                                    ok.loc[ok["init"] == init, metric].dropna()))
    others = [i for i, p in enumerate(pvals) if not math.isnan(p)]
    adjusted = holm([pvals[i] for i in others]) if others else []
    table["paired_seeds"] = pairs
    table["p_value"] = pvals
    table["p_holm"] = math.nan
    table.loc[others, "p_holm"] = adjusted
    table["prob_best_better"] = pis
    best_lo = table.iloc[0]["ci_low"]
    table["winner"] = table["init"] == best
    table["tied_with_best"] = ~table["winner"] & (table["ci_high"] >= best_lo) & table["ci_high"].notna()
    table["significant"] = table["p_holm"] < ALPHA
    table["verdict"] = np.select([table["winner"], table["tied_with_best"], table["significant"]],
                                 ["best", "tied", "worse (p<0.05)"], "")
    return table, caveat(min(p for p in pairs[1:]) if len(pairs) > 1 else 0, test)


@dataclass
class Ranking:
    per_problem: pd.DataFrame
    overall: pd.DataFrame
    caveats: dict[str, str]
    targets: dict[str, float]


def rank(runs: pd.DataFrame, metric: str = "test_acc", test: str = "wilcoxon") -> Ranking:
    if metric not in METRICS_HIGHER_IS_BETTER:
        raise InitbenchError(f"unknown metric '{metric}'; valid: {', '.join(METRICS_HIGHER_IS_BETTER)}")
    if test not in TESTS:
        raise InitbenchError(f"unknown test '{test}'; valid: {', '.join(TESTS)}")
    tables, caveats = [], {}
    for problem, g in runs.groupby("problem", sort=True):
        table, note = rank_problem(g, metric, test)
        tables.append(table.assign(problem=problem))
        if note:
            caveats[problem] = note
    per_problem = pd.concat(tables, ignore_index=True)
    per_problem = per_problem[["problem", *[c for c in per_problem.columns if c != "problem"]]]
    overall = (per_problem.groupby("init")
               .agg(problems=("problem", "nunique"), mean_rank=("rank", "mean"), mean=("mean", "mean"),
                    wins=("winner", "sum"), ties=("tied_with_best", "sum"),
                    divergence_rate=("divergence_rate", "mean"))
               .sort_values(["mean_rank", "mean"], ascending=[True, False]).reset_index())
    targets = runs.groupby("problem")["target"].first().to_dict() if "target" in runs else {}
    return Ranking(per_problem, overall, caveats, targets)
