"""Across problems, with rliable's anchors: the IQM of normalised scores with a stratified bootstrap CI,
the probability of improvement over each problem's reference, and a performance profile.

Normalised score of a run: (score - chance) / (best scheme's mean - chance) in its problem, so 0 is
chance level and 1 the best scheme's mean. A stratified bootstrap resamples runs within each problem
(`scipy.stats.bootstrap` with one sample per problem, percentile intervals).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

RESAMPLES = 2000
LEVEL = 0.95
TAUS = np.round(np.linspace(0, 0.1, 101), 6)  # performance profile: 0 to 10 accuracy points below the best


def _iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def _prob_improvement(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over problems of P(X > Y) (ties half); samples alternate x_1, y_1, x_2, y_2, ..."""
    probs = []
    for x, y in zip(samples[::2], samples[1::2], strict=True):
        x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
        probs.append(((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1)))
    return np.mean(probs, axis=0)


def stratified(samples: list[np.ndarray], statistic, seed: int = 0) -> tuple[float, float, float]:
    """The statistic and its percentile CI from a bootstrap that resamples within each stratum."""
    samples = [np.asarray(s, dtype=float) for s in samples]
    point = float(statistic(*samples))
    if any(len(s) < 2 for s in samples):
        return point, math.nan, math.nan
    res = stats.bootstrap(samples, statistic, n_resamples=RESAMPLES, confidence_level=LEVEL, method="percentile",
                          vectorized=True, paired=False, rng=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def normalised(runs: pd.DataFrame, per_problem: pd.DataFrame) -> pd.Series:
    """Each run's score on the chance (0) to best-scheme-mean (1) scale of its problem."""
    best = per_problem.groupby("problem")["mean"].max()
    chance = 1.0 / pd.to_numeric(runs["num_classes"], errors="coerce").fillna(10)
    span = runs["problem"].map(best) - chance
    return ((runs["score"] - chance) / span.where(span > 0)).astype(float)


def across_problems(runs: pd.DataFrame, per_problem: pd.DataFrame,
                    references: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The overall table (one row per scheme) and the performance profile (init, tau, fraction)."""
    runs = runs.assign(norm=normalised(runs, per_problem))
    best = per_problem.groupby("problem")["mean"].max()
    rows, profile = [], []
    for init, table in per_problem.groupby("init", sort=False):
        mine = runs[runs["init"] == init]
        norm = [g["norm"].dropna().to_numpy() for _, g in mine.groupby("problem")]
        norm = [s for s in norm if len(s)]
        iqm_ci = stratified(norm, _iqm) if norm else (math.nan, math.nan, math.nan)
        pairs = []
        for problem, g in mine.groupby("problem"):
            ref = runs[(runs["problem"] == problem) & (runs["init"] == references[problem])]["score"].dropna()
            if g["score"].notna().any() and len(ref):
                pairs += [g["score"].dropna().to_numpy(), ref.to_numpy()]
        pi = stratified(pairs, _prob_improvement) if pairs else (math.nan, math.nan, math.nan)
        gap = (table["problem"].map(best) - table["mean"]).to_numpy()
        for tau in TAUS:
            profile.append({"init": init, "tau": tau, "fraction": float(np.mean(gap <= tau + 1e-12))})
        verdicts = table["verdict"].value_counts()
        rows.append({
            "init": init, "problems": table["problem"].nunique(), "mean_rank": table["rank"].mean(),
            "wins": int((table["rank"] == 1).sum()),
            **{v: int(verdicts.get(v, 0)) for v in ("better", "equivalent", "worse", "inconclusive", "failed")},
            "iqm_norm": iqm_ci[0], "iqm_ci_low": iqm_ci[1], "iqm_ci_high": iqm_ci[2],
            "prob_improvement": pi[0], "pi_ci_low": pi[1], "pi_ci_high": pi[2],
            "failure_rate": float(mine["status"].isin(("diverged", "collapsed", "failed")).mean()),
        })
    overall = pd.DataFrame(rows).sort_values(["iqm_norm", "mean_rank"], ascending=[False, True], na_position="last")
    return overall.reset_index(drop=True), pd.DataFrame(profile)
