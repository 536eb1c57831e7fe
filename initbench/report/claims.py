"""A study's claims (plan.claims), judged on its records by the rules of the verdicts: `supported`, `contradicted`, or
`not shown` (the seeds cannot tell), each with the numbers behind the word.

- better / worse: the paired differences of the ranking metric (or the claim's own), A - B seed by seed, with the
  report's test (Wilcoxon or t) Holm-corrected over the claims; the word of the verdicts (better when p_holm < alpha
  and the direction and the 95% CI of the mean difference agree, equivalent when that CI lies inside +-margin).
  Supported when it is the claimed direction; contradicted when it is the other direction or equivalent.
- equivalent / not_worse: the 95% CI of the mean paired difference against the claim's margin: inside +-M
  (above -M) supports it, wholly beyond the margin contradicts it.
- fails / trains: the failure counts (diverged, collapsed or failed runs) against B's, Fisher's exact test, or alone
  against one half, the exact binomial test; two-sided, Holm-corrected over the claims, and the direction must agree.
- fails_sooner: along the axis, the first value at which each scheme mostly fails; Fisher's exact test there.

A scheme that failed in every run is judged like any other: its runs score as the ranking scores them (a collapsed
run its accuracy, a diverged one chance level), so its paired differences exist; only runs that crashed (status
`failed`) have no score, and a paired claim on a scheme whose every run crashed is not shown."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from initbench.errors import InitbenchError
from initbench.plan.claims import COUNTED, Claim, cell_attributes, select
from initbench.report.answers import points
from initbench.report.stats import FAILED_STATUSES, MIN_PAIRS, MOST, holm, paired_difference, scored
from initbench.syntax import format_value

WORDS = {
    "supported": "the study passed the claim's test: p_holm < alpha with the claimed direction (or, for equivalent "
                 "and not_worse, the 95% CI inside the margin)",
    "contradicted": "the study passed the test of the opposite: the other direction, or no difference beyond the "
                    "margin where one was claimed",
    "not shown": "neither: the seeds cannot tell (or the claim's problem has no runs to judge)",
}
COLUMNS = ["id", "claim", "problem", "word", "numbers", "why", "test", "delta", "ci_low", "ci_high", "p_value",
           "p_holm", "failures_a", "failures_b", "pairs", "declared", "after_data"]


@dataclass
class _Judged:
    claim: Claim
    problem: str
    test: str = ""
    p: float = math.nan
    direction: float = 0.0  # the sign the test sees, + for the claim's direction
    diff: dict[str, float] | None = None  # the paired difference A - B (delta, ci_low, ci_high, pairs)
    failures: tuple[str, str] = ("", "")
    word: str = "not shown"
    why: str = ""


def cells_of(runs: pd.DataFrame, order: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The study's problems in `order`, each with what a claim's `where` can name of it."""
    firsts = runs.groupby("problem", sort=False).first()
    problems = [p for p in order if p in firsts.index]
    return problems, [cell_attributes(firsts.loc[p, "dataset"], firsts.loc[p, "model"],
                                      json.loads(firsts.loc[p, "settings"])) for p in problems]


def judge(claims: tuple[Claim, ...], runs: pd.DataFrame, order: list[str], metric: str, test: str, alpha: float,
          margin: float, declared: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per claim (COLUMNS): its word and the numbers behind it. `order` lists the problems (along each axis
    in the axis's order); `margin` is the report's (a fraction), which a better/worse claim's equivalence uses;
    `declared` maps a claim's id to its declaration (declared, after_data)."""
    from initbench.inits import display_init

    problems, cells = cells_of(runs, order)
    judged = []
    for claim in claims:
        claim = dataclasses.replace(claim, schemes=tuple(map(display_init, claim.schemes)))  # as the runs name them
        try:
            chosen = select(claim, cells)
        except InitbenchError as exc:
            judged.append(_Judged(claim, "", why=str(exc)))
            continue
        picked = [problems[i] for i in chosen]
        here = runs[runs["problem"].isin(picked)]
        values = [format_value(cells[i].get(claim.along)) for i in chosen] if claim.along else []
        judged.append(_judge(claim, here, picked, claim.metric or metric, test, margin, values))
    tested = [j for j in judged if not math.isnan(j.p)]
    for j, p_holm in zip(tested, holm([j.p for j in tested]) if tested else [], strict=True):
        j.diff = {**(j.diff or {}), "p_holm": p_holm}
        _word(j, p_holm, alpha, margin)
    declared = declared or {}
    rows = []
    for j in judged:
        diff = j.diff or {}
        when = declared.get(j.claim.id, {})
        rows.append({"id": j.claim.id, "claim": j.claim.words, "problem": j.problem, "word": j.word,
                     "numbers": _numbers(j), "why": j.why, "test": j.test, "delta": diff.get("delta", math.nan),
                     "ci_low": diff.get("ci_low", math.nan), "ci_high": diff.get("ci_high", math.nan),
                     "p_value": j.p, "p_holm": diff.get("p_holm", math.nan), "failures_a": j.failures[0],
                     "failures_b": j.failures[1], "pairs": diff.get("pairs", math.nan),
                     "declared": when.get("declared", ""), "after_data": when.get("after_data")})
    return pd.DataFrame(rows, columns=COLUMNS)


def _counts(runs: pd.DataFrame, init: str) -> tuple[int, int]:
    """(failed runs, runs) of a scheme."""
    status = runs.loc[runs["init"] == init, "status"]
    return int(status.isin(FAILED_STATUSES).sum()), len(status)


def _judge(claim: Claim, runs: pd.DataFrame, picked: list[str], metric: str, test: str, margin: float,
           values: list[str]) -> _Judged:
    """The claim's test on its problem(s): its p and direction, or its interval; the word where no Holm is needed."""
    j = _Judged(claim, " -> ".join(picked))
    missing = [s for s in claim.schemes if not (runs["init"] == s).any()]
    if missing:
        j.why = f"{', '.join(missing)} has no runs in {j.problem}"
        return j
    a, b = claim.schemes[0], claim.schemes[1] if len(claim.schemes) > 1 else None
    if claim.kind not in COUNTED:
        scores = scored(runs, metric)
        per_seed = scores.pivot_table(index="seed", columns="init", values="score", aggfunc="first", dropna=False)
        per_seed = per_seed.reindex(columns=[a, b])  # a scheme whose every run crashed has no score
        d = (per_seed[a] - per_seed[b]).dropna().to_numpy()
        diff = paired_difference(d, test)
        j.diff, j.test = {**diff, "pairs": len(d)}, f"paired {test} on {metric}"
        if len(d) < MIN_PAIRS:
            j.why = f"{len(d)} paired seeds: fewer than {MIN_PAIRS}"
        elif claim.kind in ("better", "worse"):
            j.p, j.direction = diff["p"], diff["direction"] * (1 if claim.kind == "better" else -1)
        else:
            _interval_word(j, claim.margin / 100)
        return j
    if claim.kind == "fails_sooner":
        return _sooner(j, runs, picked, values, a, b)
    fa, na = _counts(runs, a)
    j.failures = (f"{fa}/{na}", "")
    sign = 1 if claim.kind == "fails" else -1
    if b is None:
        j.test = "exact binomial test against one half"
        j.p = float(stats.binomtest(fa, na, 0.5).pvalue)
        j.direction = sign * float(np.sign(fa / na - 0.5))
        return j
    fb, nb = _counts(runs, b)
    j.failures = (f"{fa}/{na}", f"{fb}/{nb}")
    j.test = "Fisher's exact test on the failure counts"
    j.p = float(stats.fisher_exact([[fa, na - fa], [fb, nb - fb]]).pvalue)
    j.direction = sign * float(np.sign(fa / na - fb / nb))
    return j


def _sooner(j: _Judged, runs: pd.DataFrame, picked: list[str], values: list[str], a: str, b: str) -> _Judged:
    """A trend: the first value along the axis where each scheme mostly fails (more than half its runs), among the
    values where both have runs; Fisher's exact test at the earlier of the two."""
    counts = [(_counts(runs[runs["problem"] == p], a), _counts(runs[runs["problem"] == p], b)) for p in picked]
    both = [i for i, ((_, na), (_, nb)) in enumerate(counts) if na and nb]
    missing = [values[i] for i in range(len(picked)) if i not in both]

    def first(k: int) -> int:
        return next((i for i in both if counts[i][k][0] / counts[i][k][1] > MOST), len(picked))

    at_a, at_b = first(0), first(1)
    along = j.claim.along
    j.test = f"Fisher's exact test on the failure counts at the first {along} where one of the two mostly fails"
    j.failures = tuple(f"mostly fails from {along} {values[i]}" if i < len(picked) else "never mostly fails"
                       for i in (at_a, at_b))
    gaps = f" ({along} {', '.join(missing)} left out: not both schemes have runs there)" if missing else ""
    if at_a == at_b:
        j.why = (f"both mostly fail first at {along} {values[at_a]}" if at_a < len(picked)
                 else "neither mostly fails") + gaps
        return j
    at = min(at_a, at_b)
    (fa, na), (fb, nb) = counts[at]
    j.p = float(stats.fisher_exact([[fa, na - fa], [fb, nb - fb]]).pvalue)
    j.direction = float(np.sign(fa / na - fb / nb))
    j.failures = (f"{fa}/{na} at {along} {values[at]}, {j.failures[0]}", f"{fb}/{nb}, {j.failures[1]}")
    j.why = gaps.strip(" ()")
    return j


def _interval_word(j: _Judged, m: float) -> None:
    """equivalent / not_worse: the 95% CI of the mean paired difference against the margin `m` (a fraction)."""
    lo, hi = j.diff["ci_low"], j.diff["ci_high"]
    inside = (-m < lo and hi < m) if j.claim.kind == "equivalent" else lo > -m
    beyond = (lo >= m or hi <= -m) if j.claim.kind == "equivalent" else hi <= -m
    j.word = "supported" if inside else "contradicted" if beyond else "not shown"
    where = (("inside", "beyond", "across") if j.claim.kind == "equivalent" else ("above", "wholly below", "across"))
    bound = f"±{m * 100:g}" if j.claim.kind == "equivalent" else f"-{m * 100:g}"
    j.why = (f"the 95% CI [{points(lo, True)}, {points(hi, True)}] lies "
             f"{where[0] if inside else where[1] if beyond else where[2]} {bound} points")


def _word(j: _Judged, p_holm: float, alpha: float, margin: float) -> None:
    """A tested claim's word: its direction with p_holm < alpha (and, on paired differences, the CI on that side)
    supports it; the other direction contradicts it, and so does equivalence for better / worse."""
    lo, hi = (j.diff or {}).get("ci_low", math.nan), (j.diff or {}).get("ci_high", math.nan)
    if j.claim.kind == "worse":
        lo, hi = -hi, -lo
    paired = j.claim.kind in ("better", "worse")
    if p_holm < alpha and j.direction > 0 and (not paired or lo > 0):
        j.word, why = "supported", "in the claimed direction"
    elif p_holm < alpha and j.direction < 0 and (not paired or hi < 0):
        j.word, why = "contradicted", "in the other direction"
    elif paired and p_holm >= alpha and -margin < lo and hi < margin:
        j.word, why = "contradicted", f"no difference: the 95% CI lies inside ±{margin * 100:g} points"
    else:
        why = (f"p_holm not below {alpha:g}" if p_holm >= alpha else
               "the test and the 95% CI of the mean difference disagree")
    j.why = "; ".join(x for x in (why, j.why) if x)


def _numbers(j: _Judged) -> str:
    """The numbers behind the word, in points."""
    parts = []
    if j.diff is not None and "delta" in j.diff:
        parts.append(f"delta {points(j.diff['delta'], True)} [{points(j.diff['ci_low'], True)}, "
                     f"{points(j.diff['ci_high'], True)}] points over {j.diff.get('pairs', 0)} seeds")
    if j.failures[0]:
        parts.append(f"failures {j.failures[0]}" + (f" vs {j.failures[1]}" if j.failures[1] else ""))
    if not math.isnan(j.p):
        parts.append(f"p {j.p:.3g}, p_holm {(j.diff or {}).get('p_holm', math.nan):.3g}")
    return "; ".join(parts)


def study_claims(settings: dict[str, Any], study_file: dict[str, Any], claims: tuple[Claim, ...] | None
                 ) -> tuple[tuple[Claim, ...], dict[str, dict[str, Any]]]:
    """The claims to judge (`claims`, from `initbench report --claims`, else those the study's sweep file declares)
    and when each was declared: as the study file records it for a claim it holds unchanged, else at report time,
    after the data."""
    if claims is None:
        if not settings.get("claims"):
            return (), {}
        from initbench.plan.sweep import sweep_from_doc

        claims = sweep_from_doc(settings, "sweep.json", check=False).claims
    from initbench.record import stored_claim

    declared = {}
    for claim in claims:
        old = stored_claim(study_file, claim)
        declared[claim.id] = ({"declared": old.get("declared", ""), "after_data": old.get("after_data")}
                              if old is not None else {"declared": "at report time", "after_data": True})
    return claims, declared


def read_claims(path: Any, runs: pd.DataFrame, order: list[str], inits: list[str]) -> tuple[Claim, ...]:
    """The claims of a file (`claims:`, alone or in a sweep file), checked against this study's schemes and problems:
    a bad claim is a one-line error."""
    from pathlib import Path

    import yaml

    from initbench.plan.claims import METRICS, parse_claims

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InitbenchError(f"cannot read the claims file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InitbenchError(f"the claims file {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or "claims" not in doc:
        raise InitbenchError(f"the claims file {path} must be a mapping with a claims: list (a sweep file's block)")
    if not doc["claims"]:
        raise InitbenchError(f"the claims file {path} lists no claims under claims:")
    return parse_claims(doc["claims"], str(path), inits, cells_of(runs, order)[1], METRICS)


def declared_after(value: Any) -> bool:
    """Whether a judged claim's `after_data` says it was declared after the data (True; False or None: not known to
    be, the value as the study file stored it, whatever type the table holds it in)."""
    return str(value) == "True"


def claim_lines(judged: pd.DataFrame) -> list[str]:
    """Each claim in one line of words for the terminal and the report's answers: word, claim, numbers, when."""
    lines = []
    for _, row in judged.iterrows():
        after = " [declared after the data]" if declared_after(row["after_data"]) else ""
        numbers = "; ".join(x for x in (row["numbers"], row["why"]) if x)
        lines.append(f"{row['word']}: {row['id']}: {row['claim']}" + (f" ({numbers})" if numbers else "") + after)
    return lines
