"""Ranking statistics: per-scheme CIs, paired differences to a reference, Holm, and verdicts.

Every verdict word is computed from the numbers beside it and never contradicts them:
`failed` when no run of the scheme trained; else `better` / `worse` when the Holm-corrected paired test
is below alpha and both the test's direction and the 95% CI of the mean paired difference are on the
same side of 0; else `equivalent` when that CI lies inside +-margin; else `inconclusive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from initbench.errors import InitbenchError

METRICS_HIGHER_IS_BETTER = {
    "val_acc_final": "final validation accuracy",
    "best_val_acc": "best validation accuracy",
    "auc_val_acc": "area under the validation-accuracy curve (mean val accuracy over the planned evaluations)",
    "test_acc": "final test accuracy",
}
TEST_METRICS = ("test_acc",)  # selecting on these selects on the test set
DEFAULT_METRIC = "val_acc_final"
TESTS = ("wilcoxon", "ttest")
ALPHA = 0.05
MARGIN_POINTS = 0.5  # equivalence margin, in accuracy points (0.5 points = 0.005)
LEVEL = 0.95
FAILED_STATUSES = ("diverged", "collapsed", "failed")
MOST = 0.5  # "most runs fail": a failure rate above this (the scaling section's words and the claims' trends)
MIN_PAIRS = 3  # fewer paired seeds than this: always inconclusive (a zero spread is no certainty)
VERDICTS = {
    "best": "the reference: the best scheme by the ranking metric (chosen from these runs)",
    "baseline": "the reference: the declared baseline",
    "better": "better than the reference: p_holm < alpha, and the 95% CI of the mean paired difference is above 0",
    "worse": "worse than the reference: p_holm < alpha, and the 95% CI of the mean paired difference is below 0",
    "equivalent": "the 95% CI of the mean paired difference lies inside +-margin (and p_holm >= alpha)",
    "inconclusive": "none of the above (or fewer than 3 paired seeds): the seeds cannot tell",
    "failed": "no run trained: every run diverged, collapsed or failed",
}


def mean_ci(x: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval for the mean (exact coverage for normal data at any n; NaN for n < 2)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    if se == 0:
        return m, m
    lo, hi = stats.t.interval(level, len(x) - 1, loc=m, scale=se)
    return float(lo), float(hi)


def iqm(x: np.ndarray) -> float:
    """Interquartile mean (rliable): the mean of the middle 50%."""
    return float(stats.trim_mean(np.asarray(x, dtype=float), 0.25))


def prob_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) for a random run of each, ties counting half (the Mann-Whitney U statistic / (n m)); NaN when
    either has no runs (a scheme whose every run failed)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    if not x.size or not y.size:
        return math.nan
    return float(((x > y) + 0.5 * (x == y)).mean())


def paired_test(x: np.ndarray, y: np.ndarray, test: str) -> float:
    """Two-sided p-value of a paired test of x vs y (1.0 when every difference is zero)."""
    return paired_difference(np.asarray(x, dtype=float) - np.asarray(y, dtype=float), test)["p"]


def paired_difference(d: np.ndarray, test: str, level: float = LEVEL) -> dict[str, float]:
    """Mean of the paired differences `d` with its t-interval, the two-sided p of the paired test, and
    the direction the test sees (+1, -1, or 0): for Wilcoxon the sign of the signed-rank sum."""
    d = np.asarray(d, dtype=float)
    lo, hi = mean_ci(d, level)
    out = {"delta": float(d.mean()) if len(d) else math.nan, "ci_low": lo, "ci_high": hi, "p": math.nan,
           "direction": 0.0, "nonzero": int(np.count_nonzero(d))}
    if len(d) < 2:
        return out
    if np.all(d == 0):
        return {**out, "p": 1.0}
    if test == "wilcoxon":
        nz = d[d != 0]
        ranks = stats.rankdata(np.abs(nz))
        out["direction"] = float(np.sign(ranks[nz > 0].sum() - ranks[nz < 0].sum()))
        out["p"] = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    else:
        out["direction"] = float(np.sign(d.mean()))
        out["p"] = 0.0 if np.all(d == d[0]) else float(stats.ttest_1samp(d, 0.0).pvalue)
    return out


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
    """The smallest two-sided p the exact Wilcoxon signed-rank test can give with n non-zero differences."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def seeds_needed(comparisons: int, alpha: float = ALPHA) -> int:
    """The fewest non-zero paired differences for which Holm over `comparisons` Wilcoxon tests can
    reach p_holm < alpha (the first step multiplies the smallest p by the number of comparisons)."""
    n = 1
    while comparisons * smallest_wilcoxon_p(n) >= alpha:
        n += 1
    return n


def seed_note(nonzero: list[int], test: str, alpha: float = ALPHA) -> str:
    """What the seeds can and cannot show, in plain words."""
    m = len(nonzero)
    if not m:
        return ""
    if test == "ttest":
        n = max(nonzero)
        return ("" if n >= 5 else f"at most {n} non-zero paired differences: the paired t-test has little power "
                "and leans on normality; treat its p-values as rough")
    best = max(nonzero)
    floor = min(1.0, m * smallest_wilcoxon_p(best))
    words = (f"With at most {best} non-zero paired differences and {m} Holm-corrected comparison"
             f"{'s' if m > 1 else ''}, the smallest p_holm the Wilcoxon test can reach is {floor:.3g}")
    if floor < alpha:
        return words + "."
    return (f"{words}, not below {alpha}: no scheme can be called better or worse here, whatever the data. "
            f"{seeds_needed(m, alpha)} seeds with non-zero differences would be needed.")


@dataclass
class Ranking:
    per_problem: pd.DataFrame
    overall: pd.DataFrame
    notes: dict[str, list[str]]  # problem -> plain-words caveats
    references: dict[str, str]  # problem -> reference scheme
    targets: dict[str, float]
    metric: str = DEFAULT_METRIC
    baseline: str | None = None
    margin: float = MARGIN_POINTS / 100
    alpha: float = ALPHA
    test: str = "wilcoxon"
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)
    seed_notes: dict[str, str] = field(default_factory=dict)  # problem -> what its seeds can show (seed_note)


def scored(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Runs with the ranking metric as `score`: a diverged run ends with non-finite weights, so its
    final and best accuracies are chance level (1/classes); failed runs have no score."""
    runs = runs.copy()
    chance = 1.0 / pd.to_numeric(runs["num_classes"], errors="coerce").fillna(10)
    runs["score"] = runs[metric].astype(float)
    diverged = runs["status"] == "diverged"
    if metric != "auc_val_acc":
        runs.loc[diverged, "score"] = chance[diverged]
    runs.loc[diverged & runs["score"].isna(), "score"] = 0.0
    runs.loc[runs["status"] == "failed", "score"] = math.nan
    return runs


def rank_problem(runs: pd.DataFrame, metric: str = DEFAULT_METRIC, test: str = "wilcoxon",
                 baseline: str | None = None, margin: float = MARGIN_POINTS / 100,
                 alpha: float = ALPHA) -> tuple[pd.DataFrame, list[str]]:
    """Rank the schemes of one problem on `metric`, compare each with the reference by paired differences,
    and give every row a verdict. Returns the table and plain-words notes."""
    runs = scored(runs, metric)
    per_seed = runs.pivot_table(index="seed", columns="init", values="score", aggfunc="first", dropna=False)
    per_seed = per_seed.reindex(columns=runs["init"].unique())  # a scheme whose runs all failed has no score
    mean_rank = per_seed.rank(axis=1, ascending=False, method="average").mean()
    rows = []
    for init, g in runs.groupby("init", sort=False):
        x = g["score"].dropna().to_numpy(dtype=float)
        lo, hi = np.clip(mean_ci(x), 0.0, 1.0)  # an accuracy's mean lies in [0, 1]
        trained = ~g["status"].isin(FAILED_STATUSES)  # a run that failed later reached no target that counts
        reached = g["steps_to_target"].notna() & trained
        known = (g["target_known"] if "target_known" in g else pd.Series(True, index=g.index)) & trained
        status = g["status"].value_counts()
        lrs = g["lr"].dropna().unique() if "lr" in g else []
        rows.append({
            "init": init, "lr": float(lrs[0]) if len(lrs) == 1 else math.nan, "n": len(x),
            "diverged": int(status.get("diverged", 0)),
            "collapsed": int(status.get("collapsed", 0)), "failed": int(status.get("failed", 0)),
            "failure_rate": float(g["status"].isin(FAILED_STATUSES).mean()),
            "mean": x.mean() if len(x) else math.nan, "std": x.std(ddof=1) if len(x) > 1 else math.nan,
            "ci_low": lo, "ci_high": hi, "median": float(np.median(x)) if len(x) else math.nan,
            "iqm": iqm(x) if len(x) >= 4 else math.nan, "test_acc": g["test_acc"].astype(float).mean(),
            "best_val_acc": g["best_val_acc"].astype(float).mean(), "auc_val_acc": g["auc_val_acc"].mean(),
            "steps_to_target": g.loc[reached, "steps_to_target"].median(),
            "reached_target": f"{reached.sum()}/{int(known.sum())}", "mean_rank": mean_rank.get(init, math.nan),
            "images_per_s": g["images_per_s"].median(),
        })
    table = pd.DataFrame(rows)
    # schemes whose runs mostly failed rank after those that mostly trained, whatever their survivors scored
    table["mostly_failed"] = table["failure_rate"] >= 0.5
    table = table.sort_values(["mostly_failed", "mean", "mean_rank"], ascending=[True, False, True],
                              na_position="last").drop(columns="mostly_failed").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    notes = []
    # The best reference is the best scheme whose runs mostly trained (a scheme with one lucky run of ten
    # is no reference); failing that, any scheme with a trained run.
    for candidates in (table[table["failure_rate"] < 0.5], table[table["failure_rate"] < 1], table):
        if len(candidates):
            reference = candidates.iloc[0]["init"]
            break
    if baseline is not None:  # a declared baseline stays the reference, even one that failed in every run
        present = table.loc[table["init"] == baseline, "failure_rate"]
        if not len(present):
            notes.append(f"The baseline {baseline} has no runs here; the reference is the best scheme instead.")
        elif present.iloc[0] >= 1:
            notes.append(f"The baseline {baseline} failed in every run here; it stays the reference, its runs scored "
                         "as they ended (a diverged run at chance level), so each delta is the gain over a failed "
                         f"scheme. The best scheme here is {reference}.")
            reference = baseline
        else:
            reference = baseline
    if reference != baseline and len(table) > 1:  # one scheme alone is compared with nothing
        notes.append(f"The reference is {reference}, the best by {metric} chosen from these same runs; choosing "
                     "the best favours it (winner's curse), so its lead is likely overstated. Declare a baseline "
                     "(`--baseline` or `baseline:` in the sweep file) for an unbiased reference.")
    cmp = {}
    for init in table["init"]:
        if init == reference:
            continue
        both = per_seed[[reference, init]].dropna()
        d = (both[init] - both[reference]).to_numpy()
        diff = paired_difference(d, test)
        diff["ci_low"], diff["ci_high"] = np.clip([diff["ci_low"], diff["ci_high"]], -1.0, 1.0)
        cmp[init] = {**diff, "pairs": len(d),
                     "prob": prob_improvement(runs.loc[runs["init"] == init, "score"].dropna(),
                                              runs.loc[runs["init"] == reference, "score"].dropna())}
    # Schemes that failed outright are not tested (their verdict is `failed`): they stay out of Holm's family.
    failed = set(table.loc[table["failure_rate"] >= 1, "init"])
    tested = [i for i, c in cmp.items() if not math.isnan(c["p"]) and i not in failed]
    adjusted = dict(zip(tested, holm([cmp[i]["p"] for i in tested]), strict=True)) if tested else {}
    get = lambda key: [cmp.get(i, {}).get(key, math.nan) for i in table["init"]]  # noqa: E731
    table["paired_seeds"] = [cmp[i]["pairs"] if i in cmp else per_seed[reference].notna().sum()
                             for i in table["init"]]
    table["delta"], table["delta_ci_low"], table["delta_ci_high"] = get("delta"), get("ci_low"), get("ci_high")
    table["p_value"] = get("p")
    table["p_holm"] = [adjusted.get(i, math.nan) for i in table["init"]]
    table["prob_beats_ref"] = get("prob")
    table["reference"] = reference
    table["verdict"] = [verdict(row, cmp.get(row["init"], {}).get("direction", 0.0), reference, baseline, margin,
                                alpha) for _, row in table.iterrows()]
    notes += [w for w in (disagreement(row, alpha) for _, row in table.iterrows()) if w]
    repeats = int(runs.duplicated(["init", "seed"]).sum())
    if repeats:
        notes.append(f"{repeats} run(s) repeat a (scheme, seed) pair with other init or data seeds: the paired "
                     "comparisons use the first run of each pair; n, mean and the interval use all runs.")
    seed_words = seed_note([cmp[i]["nonzero"] for i in tested], test, alpha)
    if seed_words:
        notes.append(seed_words)
    table.attrs["seed_note"] = seed_words  # the report's answer says it first
    return table, notes


def verdict(row: pd.Series, direction: float, reference: str, baseline: str | None, margin: float,
            alpha: float) -> str:
    """One word from the row's numbers (see VERDICTS)."""
    if row["failure_rate"] >= 1:
        return "failed"
    if row["init"] == reference:
        return "baseline" if reference == baseline else "best"
    if row["paired_seeds"] < MIN_PAIRS:
        return "inconclusive"
    p, lo, hi = row["p_holm"], row["delta_ci_low"], row["delta_ci_high"]
    if p < alpha:  # a difference only when the test, its direction and the CI of the mean all agree
        if direction > 0 and lo > 0:
            return "better"
        if direction < 0 and hi < 0:
            return "worse"
        return "inconclusive"
    if -margin < lo and hi < margin:
        return "equivalent"
    return "inconclusive"


def disagreement(row: pd.Series, alpha: float) -> str:
    """Why a row with p_holm < alpha is not called better or worse ('' when it is, or p_holm >= alpha)."""
    if not row["p_holm"] < alpha or row["verdict"] != "inconclusive":
        return ""
    return (f"{row['init']}: the paired test finds a difference (p_holm {row['p_holm']:.3g}) but the 95% CI of the "
            f"mean difference [{row['delta_ci_low']:+.4f}, {row['delta_ci_high']:+.4f}] includes 0 or points the "
            "other way (a few seeds far off): inconclusive.")


def rank(runs: pd.DataFrame, metric: str = DEFAULT_METRIC, test: str = "wilcoxon", baseline: str | None = None,
         margin: float = MARGIN_POINTS / 100, alpha: float = ALPHA) -> Ranking:
    """Rank every problem, then summarise across problems (see `across`)."""
    from initbench.report.across import across_problems

    if metric not in METRICS_HIGHER_IS_BETTER:
        raise InitbenchError(f"unknown metric '{metric}'; valid: {', '.join(METRICS_HIGHER_IS_BETTER)}")
    if test not in TESTS:
        raise InitbenchError(f"unknown test '{test}'; valid: {', '.join(TESTS)}")
    if not 0 <= margin < 1:
        raise InitbenchError(f"margin must be between 0 and 100 accuracy points, got {margin * 100:g}")
    if baseline is not None and baseline not in set(runs["init"]):
        raise InitbenchError(f"unknown baseline '{baseline}'; valid: {', '.join(sorted(set(runs['init'])))}")
    tables, notes, references, seed_notes = [], {}, {}, {}
    for problem, g in runs.groupby("problem", sort=True):
        table, problem_notes = rank_problem(g, metric, test, baseline, margin, alpha)
        seed_notes[problem] = table.attrs.get("seed_note", "")
        tables.append(table.assign(problem=problem))
        notes[problem] = problem_notes
        references[problem] = table["reference"].iloc[0]
    per_problem = pd.concat(tables, ignore_index=True)
    per_problem = per_problem[["problem", *[c for c in per_problem.columns if c != "problem"]]]
    overall, profile = across_problems(scored(runs, metric), per_problem, references)
    targets = runs.groupby("problem")["target"].first().to_dict() if "target" in runs else {}
    return Ranking(per_problem, overall, notes, references, targets, metric, baseline, margin, alpha, test, profile,
                   seed_notes)
