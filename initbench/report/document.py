"""Tables and words of the report, rendered as Markdown and HTML."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.stats import BOOTSTRAP, METRICS_HIGHER_IS_BETTER

_SHOWN = ["rank", "init", "verdict", "n", "mean", "std", "ci_low", "ci_high", "median", "iqm", "best_val_acc",
          "auc_val_acc", "steps_to_target", "reached_target", "divergence_rate", "mean_rank", "p_holm",
          "prob_best_better"]


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else ""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)


def _markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, highlight: pd.DataFrame | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        cls = ""
        if highlight is not None:
            cls = " class='winner'" if highlight.iloc[i]["winner"] else (
                " class='tied'" if highlight.iloc[i]["tied_with_best"] else "")
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:nth-child(2){text-align:left}tr.winner{background:#c8f0c8;font-weight:600}
tr.tied{background:#eaf8ea}.caveat{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
img{max-width:100%;margin:.5em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px}"""


def _legend(metric: str, test: str) -> str:
    name = "Wilcoxon signed-rank test" if test == "wilcoxon" else "paired t-test"
    return (f"Ranked on **{metric}** ({METRICS_HIGHER_IS_BETTER[metric]}), mean over seeds; 95% CI by percentile "
            f"bootstrap ({BOOTSTRAP} resamples). Each scheme is compared with the best by a two-sided {name} over "
            f"paired seeds (same data order, only the init differs), Holm-corrected (p_holm); prob_best_better = "
            "P(a run of the best beats a run of this scheme). A scheme whose CI reaches the best's lower CI bound "
            "is marked tied. Diverged runs keep their (chance-level) accuracy; failed runs are left out of the "
            "means. steps_to_target: median first step with val accuracy >= target, over the runs that reached it.")
