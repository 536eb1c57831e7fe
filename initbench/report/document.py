"""The report as one document model (a list of blocks), rendered to Markdown and to one HTML page."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.across import RESAMPLES
from initbench.report.answers import answer, in_points, main_table, points
from initbench.report.claims import declared_after
from initbench.report.load import Study
from initbench.report.plots import SCALING
from initbench.report.scaling import problem_order
from initbench.report.stats import METRICS_HIGHER_IS_BETTER, TEST_METRICS, VERDICTS, Ranking
from initbench.report.tuning import WITHIN_POINTS

SHOWN = ["rank", "init", "lr", "verdict", "n", "failure_rate", "mean", "ci_low", "ci_high", "delta", "delta_ci_low",
         "delta_ci_high", "p_holm", "prob_beats_ref", "test_acc", "std", "median", "iqm", "best_val_acc",
         "auc_val_acc", "steps_to_target", "reached_target", "mean_rank"]
OVERALL_SHOWN = ["init", "problems", "mean_rank", "wins", "better", "equivalent", "worse", "inconclusive", "failed",
                 "iqm_norm", "iqm_ci_low", "iqm_ci_high", "prob_improvement", "pi_ci_low", "pi_ci_high",
                 "failure_rate"]


@dataclass
class Block:
    """One piece of the document: kind is h1, h2, h3, p, answer (lines), note, list, table, img or pre."""

    kind: str
    content: Any
    classes: list[str] | None = None  # per table row, or the image's (HTML only)


def build(study: Study, ranking: Ranking, plots: dict[str, list[Path]], results_dir: Path) -> list[Block]:
    """The whole report, in order: each problem's answer (words, forest plot, main table), then how to read them,
    how the study was made, across problems, what predicted the outcome, the plots, an appendix of every column, and
    the settings."""
    metric, runs = ranking.metric, study.runs
    describe = METRICS_HIGHER_IS_BETTER[metric].split(" (")[0]
    reference = (f"the declared baseline **{ranking.baseline}**" if ranking.baseline
                 else "the best scheme of each problem (see the winner's-curse note)")
    doc = [
        Block("h1", f"initbench report: {results_dir}"),
        Block("p", f"{len(runs)} runs, {runs['problem'].nunique()} problem(s), {runs['init'].nunique()} schemes, "
                   f"ranked on {describe} (`{metric}`) in accuracy points (0-100). Reference: {reference}; every "
                   "other scheme is compared with it seed by seed. How to read the verdicts follows the answers."),
    ]
    if metric in TEST_METRICS:
        doc.append(Block("note", f"Ranked on {describe} (`{metric}`): this selects on the test set, so the winner's "
                                 "test numbers are no longer an unbiased estimate. Rank on a validation metric (the "
                                 "default, `val_acc_final`) to choose, and report test."))
    if study.skipped or study.partial:
        doc.append(Block("note", f"{len(study.skipped)} folder(s) skipped and {len(study.partial)} record(s) "
                                 "partial: see the sections near the end."))
    doc += _claims_blocks(study)
    doc += _scaling_blocks(study, ranking, plots)
    forests = {problem: next((p for p in paths if p.stem.startswith("forest_")), None)
               for problem, paths in plots.items()}
    tables = dict(list(ranking.per_problem.groupby("problem", sort=True)))
    order = [p for p in problem_order(study.runs, study.axes) if p in tables]
    for problem in order:
        table = tables[problem].reset_index(drop=True)
        doc += [Block("h2", problem), Block("answer", answer(problem, ranking))]
        if forests.get(problem) is not None:
            doc.append(Block("img", forests[problem], ["forest"]))
        doc.append(Block("table", main_table(table), [f"v-{v}" for v in table["verdict"]]))
        seeds = ranking.seed_notes.get(problem, "")
        doc += [Block("note", n) for n in ranking.notes.get(problem, []) if n != seeds]
    doc += _legend(ranking)
    doc += _reproducibility(study, results_dir)
    if study.split:
        items = [f"{base}: " + "; ".join(f"{k} = {', '.join(map(_setting, v))}" for k, v in keys.items())
                 for base, keys in study.split.items()]
        doc += [Block("note", "Runs with different training settings are separate problems, never pooled:"),
                Block("list", items)]
    if study.tuning is not None:
        doc += _tuning_blocks(study, ranking)
    if runs["problem"].nunique() > 1:
        doc += [Block("h2", "Across problems"),
                Block("p", "`iqm_norm`: interquartile mean of the runs' normalised scores (0 = chance, 1 = the best "
                           "scheme's mean in the problem) with a 95% stratified-bootstrap interval (runs resampled "
                           f"within each problem, {RESAMPLES} resamples, percentile). `prob_improvement`: "
                           "P(a run of the scheme beats a run of the problem's reference), averaged over problems, "
                           "with the same bootstrap. Verdict columns count the problems. The performance profile plot "
                           "shows the fraction of problems where the scheme's mean is within tau of the best."),
                Block("table", ranking.overall[OVERALL_SHOWN])]
    if study.predictors is not None:
        doc += _step0_blocks(study, metric)
    if study.skipped:
        doc += [Block("h2", "Skipped records"),
                Block("p", "These folders hold no usable record and are in no number above:"),
                Block("list", study.skipped)]
    if study.excluded:
        doc += [Block("h2", "Records outside this study's protocol"),
                Block("p", "Complete records in this folder that the tuning protocol does not use (left by an earlier "
                           "grid); they are in no number above:"),
                Block("list", study.excluded)]
    if study.partial:
        doc += [Block("h2", "Partial records"),
                Block("p", "These runs enter the means of the values they have; their curve metrics "
                           "(auc_val_acc, steps to target) and any value listed here are left out, and `n` counts "
                           "only the runs each mean is over:"),
                Block("list", study.partial)]
    doc.append(Block("h2", "Plots"))
    for problem, paths in plots.items():
        if not problem.startswith(f"{SCALING} "):  # shown in their own sections
            doc += [Block("h3", problem), *[Block("img", p) for p in paths if p != forests.get(problem)]]
    doc.append(Block("h2", "Appendix: every column"))
    doc.append(Block("p", "The rankings with every column, accuracies in points (`ranking.csv` and `runs.csv` hold "
                          "the same numbers as fractions, 0-1). `n`: runs with a score; `prob_beats_ref`: P(a run of "
                          "the scheme beats a run of the reference); `std`, `median`, `iqm`: over runs; "
                          "`steps_to_target`: median first step with validation accuracy at or above the problem's "
                          "target, over the runs that trained and reached it (`reached_target`)."))
    for problem in order:
        table, target = tables[problem], ranking.targets.get(problem, math.nan)
        doc += [Block("h3", problem),
                Block("p", f"Target for steps_to_target: validation accuracy ≥ {points(target)} points."),
                Block("table", in_points(table.reset_index(drop=True))[SHOWN],
                      [f"v-{v}" for v in table["verdict"]])]
    settings = json.dumps(study.settings, indent=2) if study.settings else "(no sweep.json: single runs)"
    doc += [Block("h2", "Study settings"), Block("pre", settings),
            Block("h2", "Versions"), Block("pre", json.dumps(study.versions, indent=2))]
    return doc


def _claims_blocks(study: Study) -> list[Block]:
    """The claims the study declared (or `--claims` gave): each one's word, the numbers behind it, when it was
    declared."""
    if study.claims is None:
        return []
    t = study.claims
    after = [declared_after(a) for a in t["after_data"]]
    table = pd.DataFrame({"id": t["id"], "claim": t["claim"], "word": t["word"],
                          "numbers": [f"{n} ({w})" if n and w else n or w for n, w in zip(t["numbers"], t["why"],
                                                                                          strict=True)],
                          "declared": [f"{d}, after the data" if a else f"{d}, before the data" if d else "unknown"
                                       for d, a in zip(t["declared"], after, strict=True)]})
    blocks = [Block("h2", "Claims"),
              Block("p", "What the study said it would show, judged by the rules of the verdicts. **supported**: the "
                         "claim's test passed (p_holm < 0.05 over the claims, direction and 95% CI agreeing; for "
                         "equivalent and not_worse, the CI inside the margin). **contradicted**: the opposite passed. "
                         "**not shown**: the seeds cannot tell. Failure claims use exact tests on the failure counts; "
                         "differences are in accuracy points."),
              Block("table", table, [{"supported": "v-better", "contradicted": "v-worse"}.get(w, "v-inconclusive")
                                     for w in t["word"]])]
    if any(after):
        blocks.append(Block("note", f"Declared after the data: {', '.join(t['id'][after])}. These were written with "
                                    "the runs' results at hand, so they are descriptions, not tests of a prediction."))
    return blocks


def _scaling_blocks(study: Study, ranking: Ranking, plots: dict[str, list[Path]]) -> list[Block]:
    """Per axis: its answer in words, its plot, and a table of each scheme's mean (points) and verdict per value."""
    from initbench.report.scaling import lines, scaling_table

    table, blocks = scaling_table(study.runs, ranking, study.axes), []
    for axis in study.axes:
        rows = table[table["axis"] == axis.name]
        cells = rows.assign(cell=[f"{points(m)} {v}" + (" (most failed)" if f > 0.5 else "")
                                  for m, v, f in zip(rows["mean"], rows["verdict"], rows["failure_rate"],
                                                     strict=True)])
        grid = cells.pivot_table(index="init", columns="value", values="cell", aggfunc="first", sort=False)
        grid = grid.reindex(columns=[v for v in axis.values if v in grid.columns]).reset_index()
        grid.columns = ["init", *[f"{axis.key} {v}" for v in grid.columns[1:]]]
        blocks += [Block("h2", f"Scaling: {axis.subject} over {axis.key}"), Block("answer", lines(table, axis)),
                   *[Block("img", p) for p in plots.get(f"{SCALING} {axis.name}", [])],
                   Block("p", f"Each cell: the scheme's mean `{ranking.metric}` in points and its verdict against "
                              f"the reference at that {axis.key} (each value is its own problem, below); all "
                              "numbers in `scaling.csv`."),
                   Block("table", grid)]
    return blocks


def _legend(ranking: Ranking) -> list[Block]:
    """How to read the verdicts and the columns, after the answers."""
    test = "Wilcoxon signed-rank test" if ranking.test == "wilcoxon" else "paired t-test"
    return [
        Block("h2", "How to read the verdicts"),
        Block("list", [f"**{word}**: {text}" for word, text in VERDICTS.items()]),
        Block("p", f"Accuracies are in points (0-100). `delta` is the mean per-seed difference to the reference in "
                   f"`{ranking.metric}`, with its 95% Student-t interval; `p_holm` is the two-sided {test} over the "
                   f"paired seeds, Holm-corrected over the comparisons of the problem (alpha {ranking.alpha}; schemes "
                   "that failed outright are not tested); the equivalence margin is "
                   f"±{ranking.margin * 100:g} points. The intervals are not adjusted for the number of comparisons "
                   "and p_holm is, so an interval can exclude 0 while the verdict stays inconclusive. `mean [95% CI]`: "
                   "the scheme's mean with a 95% Student-t interval. `failures`: diverged, collapsed and failed runs "
                   "of all its runs; a diverged run scores chance level (1/classes), a collapsed run keeps its "
                   "(chance-level) score, a failed run has none. `test`: mean test accuracy, reported beside the "
                   "ranking and never used to choose."),
    ]


def _reproducibility(study: Study, results_dir: Path) -> list[Block]:
    """One line: the versions, device and thread count the runs were made with, and their engines; a warning when
    the records were made in more than one environment, or one problem's runs by more than one engine or mode (their
    numbers round differently)."""
    runs = sum(study.environments.values())
    several = len(study.environments) > 1
    made = "; ".join(f"{', '.join(env[1:])}, {env[0]}" + (f" ({n} run{'s' * (n != 1)})" if several else "")
                     for env, n in study.environments.most_common())
    engines: Counter = Counter()
    for (_, engine), n in study.engines.items():
        engines[engine] += n
    how = ", ".join(f"{engine} ({n})" for engine, n in engines.most_common())
    blocks = [Block("p", f"**Reproducibility.** The {runs} records were made on {made}; engines: {how}. "
                         f"`initbench verify {results_dir}` retrains a sample of them and checks every number.")]
    if several:
        blocks.append(Block("note", f"This study's records were made in {len(study.environments)} environments "
                                    "(versions, device or torch threads): their numbers round differently, so a "
                                    "rerun reproduces each only where it was made."))
    engines_per_folder = Counter(folder for folder, _ in study.engines)
    mixed = sorted(folder for folder, n in engines_per_folder.items() if n > 1)
    if mixed:
        blocks.append(Block("note", f"{', '.join(mixed)}: trained by more than one engine or lockstep mode (the same "
                                    "run rounds differently in each)."))
    return blocks


def _step0_blocks(study: Study, metric: str) -> list[Block]:
    """What predicted the outcome: each step-0 diagnostic against the metric, and the failed runs' step-0 figures."""
    from initbench.report.predictors import LEVEL, RESAMPLES, failures, paragraph

    assert study.predictors is not None
    blocks = [Block("h2", "What predicted the outcome"),
              Block("p", "Every run recorded its step-0 diagnostics on the batch it started training on "
                         "(`diagnostics.json` in its record). Per problem, Spearman's rank correlation `rho` between "
                         f"each diagnostic and the run's `{metric}` over its runs (a diverged run at chance level, "
                         f"failed runs left out), with a {LEVEL:.0%} paired percentile-bootstrap interval over runs "
                         f"({RESAMPLES} resamples) and Spearman's test `p` (not corrected across the diagnostics)."),
              *[Block("p", line) for line in paragraph(study.predictors, metric)],
              Block("table", study.predictors)]
    bad = failures(study.runs)
    if len(bad):
        blocks += [Block("h3", "Diverged and collapsed runs at step 0"),
                   Block("p", "Their step-0 figures, to set beside the table above (inf: the figure overflowed):"),
                   Block("table", bad)]
    return blocks


def _tuning_blocks(study: Study, ranking: Ranking) -> list[Block]:
    """What the tuning stage did and chose, in words and tables, and how the ranking moves with the protocol."""
    t = study.tuning
    assert t is not None
    grid = ", ".join(f"{lr:g}" for lr in t.tune.lrs)
    which = ("each init's own chosen lr" if t.tune.protocols[0] == "per_init" else
             f"one shared lr for every init: the lr chosen for the reference scheme {t.reference}")
    blocks = [
        Block("h2", "Learning rate: tuned before the comparison"),
        Block("p", f"Stage 1 trained every scheme at each lr of the grid ({grid}) on the tuning seeds "
                   f"{', '.join(map(str, t.tune.seeds))} ({len(t.runs)} runs). **The tuning seeds were not used for "
                   f"the comparison**, which ran on seeds {', '.join(map(str, t.comparison_seeds))} at {which}. The "
                   f"chosen lr is the one with the best mean `{t.tune.metric}` (validation) over the tuning seeds; "
                   "ties go to the smaller lr; a diverged tuning run scores chance level (1/classes) and a failed one "
                   "rules its lr out."),
        Block("p", f"`lr`: the chosen lr per scheme; `shared_lr`: the reference scheme's ({t.reference}); "
                   f"`tuning_score`: the mean `{t.tune.metric}` at the chosen lr on the tuning seeds. Tuneability: "
                   "`lr_low` to `lr_high` is the run of grid lrs around the best whose mean is within "
                   f"{WITHIN_POINTS:g} accuracy point of the best, `decades` its width (log10; 0 when only the best lr "
                   "is that close; the grid's spacing limits it). `diverged`: tuning runs that diverged. `at_edge`: "
                   "the chosen lr is the grid's smallest or largest. `all_failed`: every tuning run of the scheme "
                   "failed."),
        Block("table", t.table),
    ]
    if t.waiting:
        blocks.insert(-1, Block("note", f"{t.waiting} comparison runs wait for their lr (their tuning runs are not all "
                                        "recorded yet): this report covers the runs recorded so far; finish the sweep "
                                        "for the whole comparison."))
    failed = t.table[t.table["all_failed"]]
    if len(failed):
        blocks.insert(-1, Block("note", "Every tuning run failed for " + ", ".join(
            f"{i} on {p}" for p, i in failed[["problem", "init"]].itertuples(index=False))
            + ": its lr is the grid's smallest by the tie rule, not a choice."))
    edge = t.table[t.table["at_edge"] & ~t.table["all_failed"]]
    if len(edge):
        blocks.insert(-1, Block("note", f"{len(edge)} of {len(t.table)} chosen lrs lie at an edge of the grid ("
                                        + ", ".join(f"{i} on {p}: {lr:g}" for p, i, lr in
                                                    edge[["problem", "init", "lr"]].itertuples(index=False))
                                        + "): a better lr may lie beyond it; widen the grid to know."))
    if len(t.protocols):
        blocks += [Block("h3", "Per-init lr against one shared lr"),
                   Block("p", "Both protocols trained the comparison seeds: each problem's ranking below uses "
                              f"{which}; here each scheme's rank, lr and mean under both. `rank_change` > 0: the "
                              "scheme ranks better with its own lr than with the shared one (ranks at one lr partly "
                              "measure the lr)."),
                   Block("table", t.protocols)]
    return blocks


def _setting(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else ""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "-"
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)


def to_markdown(doc: list[Block]) -> str:
    out = []
    for b in doc:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(b.kind[1])} {b.content}")
        elif b.kind == "p":
            out.append(b.content)
        elif b.kind == "note":
            out.append(f"> {b.content}")
        elif b.kind == "answer":
            out.append("\n".join(f"- {line}" for line in b.content))
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "table":
            df: pd.DataFrame = b.content
            lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
            lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
            out.append("\n".join(lines))
        elif b.kind == "img":
            out.append(f"![{b.content.stem}]({b.content.name})")
        elif b.kind == "pre":
            out.append(f"```json\n{b.content}\n```")
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1360px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.45}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}table{border-collapse:collapse;font-size:12.5px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}th{background:#f3f3f3;position:sticky;
top:0}td.t{text-align:left;white-space:normal;min-width:6em;max-width:40em}
tr.v-best td,tr.v-baseline td{background:#e4e4e4;font-weight:600}
tr.v-better td{background:#d9f0d3}tr.v-worse td{background:#fbe0dc}tr.v-equivalent td{background:#dde8f6}
tr.v-failed td{color:#999}.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
img{max-width:100%;margin:.5em 0;display:block}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px}
code{background:#f3f3f3;padding:0 .2em}h1{font-size:1.5em;margin:.4em 0}h2{margin:1.2em 0 .4em}
.answer{border-left:4px solid #4575b4;background:#f4f7fb;padding:.2em .9em;margin:.4em 0}.answer p{margin:.3em 0}
img.forest{max-height:340px;max-width:100%;width:auto}"""


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_html(doc: list[Block]) -> str:
    body = []
    for b in doc:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "note":
            body.append(f"<p class='note'>{_inline(b.content)}</p>")
        elif b.kind == "answer":
            body.append("<div class='answer'>" + "".join(f"<p>{_inline(line)}</p>" for line in b.content) + "</div>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            df = b.content
            head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
            rows = []
            for i, row in enumerate(df.itertuples(index=False)):
                cls = f" class='{b.classes[i]}'" if b.classes else ""
                rows.append(f"<tr{cls}>" + "".join(
                    f"<td{' class=t' if isinstance(v, str) else ''}>{html.escape(fmt(v))}</td>" for v in row) + "</tr>")
            body.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                        "</tbody></table></div>")
        elif b.kind == "img":
            data = base64.b64encode(b.content.read_bytes()).decode()
            cls = f" class='{' '.join(b.classes)}'" if b.classes else ""
            body.append(f"<img{cls} alt='{html.escape(b.content.stem)}' src='data:image/png;base64,{data}'>")
        elif b.kind == "pre":
            body.append(f"<pre>{html.escape(b.content)}</pre>")
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>initbench report</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>")
