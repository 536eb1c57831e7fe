"""Each problem's answer first: a few lines of words (which schemes beat the reference, by how many accuracy points,
which failed, what the seeds can show) and the main table of about ten columns, all in accuracy points. The report
opens each problem with them and `initbench report` prints the words on the terminal."""

from __future__ import annotations

import math

import pandas as pd

from initbench.report.stats import METRICS_HIGHER_IS_BETTER, Ranking

POINTS = 100  # accuracies are fractions in the records and CSVs, accuracy points (0-100) in what people read
# Columns of the ranking that hold an accuracy (a fraction): shown in points in the report's tables.
ACCURACY_COLUMNS = ("mean", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "test_acc", "std",
                    "median", "iqm", "best_val_acc", "auc_val_acc")
MAIN_COLUMNS = ["rank", "init", "lr", "verdict", "mean [95% CI]", "delta [95% CI]", "p_holm", "failures", "test"]


def points(x: float, sign: bool = False) -> str:
    """An accuracy (fraction) in points, 2 decimals: 0.98472 -> 98.47; `sign` for differences (+3.40)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * POINTS:+.2f}" if sign else f"{x * POINTS:.2f}"


def _interval(row: pd.Series, low: str, high: str, sign: bool) -> str:
    if math.isnan(row[low]) or math.isnan(row[high]):
        return ""
    return f" [{points(row[low], sign)}, {points(row[high], sign)}]"


def _kinds(row: pd.Series) -> str:
    """How a scheme's runs failed: `3 diverged, 7 collapsed`."""
    return ", ".join(f"{int(row[k])} {k}" for k in ("diverged", "collapsed", "failed") if row[k])


def _failures(row: pd.Series) -> str:
    runs = int(row["n"]) + int(row["failed"])
    kinds = _kinds(row)
    return f"{int(row['diverged'] + row['collapsed'] + row['failed'])}/{runs}" + (f" ({kinds})" if kinds else "")


def _delta(row: pd.Series) -> str:
    return f"{points(row['delta'], True)}{_interval(row, 'delta_ci_low', 'delta_ci_high', True)}"


def main_table(table: pd.DataFrame) -> pd.DataFrame:
    """The problem's ranking in about ten columns, accuracies in points (the rest: the appendix and ranking.csv)."""
    rows = []
    for _, r in table.iterrows():
        is_ref = r["init"] == r["reference"]
        rows.append({"rank": r["rank"], "init": r["init"], "lr": r["lr"], "verdict": r["verdict"],
                     "mean [95% CI]": f"{points(r['mean'])}{_interval(r, 'ci_low', 'ci_high', False)}",
                     "delta [95% CI]": "reference" if is_ref else _delta(r), "p_holm": r["p_holm"],
                     "failures": _failures(r), "test": points(r["test_acc"])})
    return pd.DataFrame(rows, columns=MAIN_COLUMNS)


def in_points(table: pd.DataFrame) -> pd.DataFrame:
    """The full ranking table with its accuracy columns in points (the appendix)."""
    out = table.copy()
    for col in ACCURACY_COLUMNS:
        if col in out:
            out[col] = out[col].astype(float) * POINTS
    return out


def names(rows: pd.DataFrame, with_delta: bool) -> str:
    """The rows' schemes, each with its paired difference and interval in points when `with_delta`."""
    return ", ".join(f"{r['init']} {_delta(r)}" if with_delta else r["init"] for _, r in rows.iterrows())


def answer(problem: str, ranking: Ranking) -> list[str]:
    """The problem's answer in 3-5 lines of words (Markdown emphasis), accuracy points throughout."""
    table = ranking.per_problem[ranking.per_problem["problem"] == problem]
    ref = table[table["init"] == table["reference"]].iloc[0]
    metric = METRICS_HIGHER_IS_BETTER[ranking.metric].split(" (")[0]
    declared = ref["init"] == ranking.baseline
    what = "the declared baseline" if declared else "the best scheme, chosen from these runs"
    if declared and ref["verdict"] == "failed":
        what += ", failed in every run"
    lines = [f"Reference: **{ref['init']}** ({what}): {metric} {points(ref['mean'])} points"
             f"{_interval(ref, 'ci_low', 'ci_high', False)}, {int(ref['n'])} runs."]
    if len(table) == 1:
        return [*lines, "Only this scheme was trained here: there is nothing to compare it with."]
    by = {v: table[table["verdict"] == v] for v in ("better", "worse", "equivalent", "inconclusive", "failed")}
    if len(by["better"]):
        lines.append(f"**Better** than {ref['init']} (points, 95% CI): {names(by['better'], True)}.")
    else:
        lines.append(f"**No scheme beats {ref['init']}** with these seeds.")
    said = []
    if len(by["worse"]):
        said.append(f"**worse**: {names(by['worse'], True)}")
    if len(by["equivalent"]):
        said.append(f"**equivalent** within ±{ranking.margin * POINTS:g} points: {names(by['equivalent'], False)}")
    if len(by["failed"]):
        failed = ", ".join(f"{r['init']} ({_kinds(r)})" for _, r in by["failed"].iterrows())
        said.append(f"**failed** (no run trained): {failed}")
    if said:
        text = "; ".join(said)
        lines.append(f"**{text[2].upper()}{text[3:]}.")  # each part opens with its bold word
    seeds = ranking.seed_notes.get(problem, "")
    unsure = by["inconclusive"]
    if len(unsure):
        lines.append(f"**Cannot tell** with these seeds: {names(unsure, True)}." + (f" {seeds}" if seeds else ""))
    elif seeds:
        lines.append(seeds)
    return lines


def plain(line: str) -> str:
    """A line of the answer for the terminal: the Markdown emphasis dropped."""
    return line.replace("**", "")
