"""Run records -> one pandas DataFrame -> ranking with honest statistics, plots, HTML/Markdown/CSV.

The DataFrame of runs (`runs.csv`) is the contract between training and reporting: nothing here
trains or reruns anything. `load` reads the records, `stats` ranks, `plots` draws, `document` renders.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from initbench.errors import InitbenchError
from initbench.report.document import _CSS, _SHOWN, _html_table, _legend, _markdown_table
from initbench.report.load import Study, load_study, steps_to_target
from initbench.report.plots import _plots
from initbench.report.stats import (
    ALPHA,
    METRICS_HIGHER_IS_BETTER,
    TESTS,
    Ranking,
    bootstrap_ci,
    caveat,
    holm,
    iqm,
    paired_test,
    prob_improvement,
    rank,
    rank_problem,
    smallest_wilcoxon_p,
)
from initbench.results import write_json

__all__ = ["ALPHA", "METRICS_HIGHER_IS_BETTER", "TESTS", "Ranking", "Study", "bootstrap_ci", "caveat", "holm",
           "iqm", "load_study", "paired_test", "prob_improvement", "rank", "rank_problem", "smallest_wilcoxon_p",
           "steps_to_target", "write_report"]


def write_report(results_dir: Path, metric: str = "test_acc", test: str = "wilcoxon", target: float | None = None,
                 out: Path | None = None, wandb: tuple[str, str | None] | None = None) -> dict[str, Path]:
    """Write runs.csv, ranking.csv, ranking_overall.csv, the plots, report.md and report.html;
    with `wandb=(project, entity)` also log the ranking to W&B as report runs."""
    study = load_study(results_dir)
    study.runs = steps_to_target(study.runs, study.curves, target)
    ranking = rank(study.runs, metric, test)
    out = Path(out or results_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").touch()
    except OSError as exc:
        raise InitbenchError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    files = {"runs": out / "runs.csv", "ranking": out / "ranking.csv", "overall": out / "ranking_overall.csv",
             "markdown": out / "report.md", "html": out / "report.html"}
    study.runs.to_csv(files["runs"], index=False)
    ranking.per_problem.to_csv(files["ranking"], index=False)
    ranking.overall.to_csv(files["overall"], index=False)
    plots = _plots(study, ranking, metric, out)
    md, body = [f"# initbench report: {results_dir}", "", _legend(metric, test), ""], [
        f"<h1>initbench report</h1><p>{html.escape(str(results_dir))}: {len(study.runs)} runs, "
        f"{study.runs['problem'].nunique()} problem(s), {study.runs['init'].nunique()} init schemes.</p>",
        f"<p>{html.escape(_legend(metric, test)).replace('**', '')}</p>"]
    for problem, table in ranking.per_problem.groupby("problem", sort=True):
        shown = table[_SHOWN].reset_index(drop=True)
        target_note = f" (steps_to_target: val acc ≥ {ranking.targets.get(problem, math.nan):.4f})"
        md += [f"## {problem}{target_note}", "", _markdown_table(shown), ""]
        body += [f"<h2>{html.escape(problem)}</h2><p>{html.escape(target_note.strip(' ()'))}</p>",
                 _html_table(shown, table.reset_index(drop=True))]
        if problem in ranking.caveats:
            md += [f"> Caveat: {ranking.caveats[problem]}", ""]
            body.append(f"<p class='caveat'>Caveat: {html.escape(ranking.caveats[problem])}</p>")
    if ranking.per_problem["problem"].nunique() > 1:
        md += ["## Overall (mean rank across problems)", "", _markdown_table(ranking.overall), ""]
        body += ["<h2>Overall (mean rank across problems)</h2>", _html_table(ranking.overall)]
    if study.skipped:
        md += ["## Skipped records", "", *[f"- {s}" for s in study.skipped], ""]
        body += ["<h2>Skipped records</h2><ul>", *[f"<li>{html.escape(s)}</li>" for s in study.skipped], "</ul>"]
    body.append("<h2>Plots</h2>")
    for problem, paths in plots.items():
        md += [f"### {problem}", "", *[f"![{p.stem}]({p.name})" for p in paths], ""]
        body += [f"<h3>{html.escape(problem)}</h3>"] + [
            f"<img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
            for p in paths]
    settings = json.dumps(study.settings, indent=2) if study.settings else "(no sweep.json: single runs)"
    versions = json.dumps(study.versions, indent=2)
    md += ["## Study settings", "", "```json", settings, "```", "", "## Versions", "", "```json", versions, "```"]
    body += ["<h2>Study settings</h2>", f"<pre>{html.escape(settings)}</pre>", "<h2>Versions</h2>",
             f"<pre>{html.escape(versions)}</pre>"]
    files["markdown"].write_text("\n".join(md) + "\n")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>initbench report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    files["html"].write_text(page)
    wandb_runs = []
    if wandb:
        from initbench.dashboards import log_report

        experiment = str(study.settings.get("name") or study.runs["experiment"].iloc[0])
        wandb_runs = log_report(ranking, plots, Path(results_dir), wandb[0], wandb[1], metric, experiment)
    write_json(out / "report.json", {"metric": metric, "test": test, "runs": len(study.runs),
                                     "skipped": study.skipped, "caveats": ranking.caveats, "wandb_runs": wandb_runs})
    return files
