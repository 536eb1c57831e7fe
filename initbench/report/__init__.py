"""Run records -> one pandas DataFrame -> ranking with honest statistics, plots, HTML/Markdown/CSV.

The DataFrame of runs (`runs.csv`) is the contract between training and reporting: nothing here
trains or reruns anything. `load` reads the records, `stats` ranks one problem, `across` summarises
across problems, `plots` draws, `document` renders one document model as Markdown and HTML.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from initbench.errors import InitbenchError
from initbench.record import study_or_empty, write_json
from initbench.report.answers import answer, plain
from initbench.report.claims import claim_lines, judge, study_claims
from initbench.report.document import build, to_html, to_markdown
from initbench.report.load import Study, load_study, steps_to_target
from initbench.report.plots import plot_all, remove_old_plots
from initbench.report.scaling import lines, problem_order, scaling_table
from initbench.report.stats import (
    ALPHA,
    DEFAULT_METRIC,
    MARGIN_POINTS,
    METRICS_HIGHER_IS_BETTER,
    TESTS,
    Ranking,
    holm,
    iqm,
    mean_ci,
    paired_difference,
    paired_test,
    prob_improvement,
    rank,
    rank_problem,
    seed_note,
    seeds_needed,
    smallest_wilcoxon_p,
)

__all__ = ["ALPHA", "DEFAULT_METRIC", "MARGIN_POINTS", "METRICS_HIGHER_IS_BETTER", "TESTS", "Ranking", "Study",
           "holm", "iqm", "load_study", "mean_ci", "paired_difference", "paired_test", "prob_improvement", "rank",
           "rank_problem", "seed_note", "seeds_needed", "smallest_wilcoxon_p", "steps_to_target", "write_report"]


# tables a report writes only when it has them: removed when a new report has none
OPTIONAL_FILES = ("tuning.csv", "protocols.csv", "diagnostics.csv", "scaling.csv", "claims.csv")


def _write_files(study: Study, ranking: Ranking, stage: Path, results_dir: Path) -> dict[str, Any]:
    study.runs.to_csv(stage / "runs.csv", index=False)
    ranking.per_problem.to_csv(stage / "ranking.csv", index=False)
    ranking.overall.to_csv(stage / "ranking_overall.csv", index=False)
    if study.tuning is not None:
        study.tuning.table.to_csv(stage / "tuning.csv", index=False)
        if len(study.tuning.protocols):
            study.tuning.protocols.to_csv(stage / "protocols.csv", index=False)
    if study.predictors is not None:
        study.predictors.to_csv(stage / "diagnostics.csv", index=False)
    if study.axes:
        scaling_table(study.runs, ranking, study.axes).to_csv(stage / "scaling.csv", index=False)
    if study.claims is not None:
        study.claims.to_csv(stage / "claims.csv", index=False)
    plots = plot_all(study, ranking, stage)
    doc = build(study, ranking, plots, results_dir)
    (stage / "report.md").write_text(to_markdown(doc))
    (stage / "report.html").write_text(to_html(doc))
    return {"plots": plots}


def remove_stale_stages(out: Path) -> None:
    """The hidden folders (`.report-<pid>-*`) that reports cut short left in `out`: those whose process is gone (a
    report being written now by another process keeps its own)."""
    for stage in out.glob(".report-*"):
        pid = stage.name.split("-")[1]
        if stage.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def generation_mismatch(out: Path) -> list[str]:
    """The report files in `out` that are not the generation its report.json lists (a report cut short between its
    renames): [] when the report is whole."""
    try:
        files = json.loads((out / "report.json").read_text()).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return ["report.json"]
    return [name for name, digest in files.items()
            if not (out / name).is_file() or hashlib.sha256((out / name).read_bytes()).hexdigest() != digest]


def write_report(results_dir: Path, metric: str = DEFAULT_METRIC, test: str = "wilcoxon", target: float | None = None,
                 out: Path | None = None, wandb: tuple[str, str | None] | None = None, baseline: str | None = None,
                 margin_points: float = MARGIN_POINTS, claims: Path | None = None) -> dict[str, Any]:
    """Write runs.csv, ranking.csv, ranking_overall.csv, the plots, report.md and report.html, then report.json, which
    names the generation and each file's checksum (`generation_mismatch` finds a report cut short between its
    renames; the next report replaces it whole, and removes the hidden folders cut-short reports left);
    with `wandb=(project, entity)` also log the ranking to W&B as report runs. The baseline defaults to
    the sweep file's `baseline:`; without one (or with `baseline="best"`), each problem's best scheme is
    the reference. `target` is in accuracy points. The claims judged (claims.csv and the report's first section) are
    those of the file `claims`, else the ones the sweep file declares. Returns the files' paths and, under
    `answers`, the claims and each problem's answer in plain words (what the report opens the problem with)."""
    if target is not None and not (math.isfinite(target) and 0 < target <= 100):
        raise InitbenchError(f"--target is a validation accuracy in points, (0, 100], got {target}")
    if not (math.isfinite(margin_points) and 0 <= margin_points < 100):
        raise InitbenchError(f"--margin is in accuracy points, 0 to 100, got {margin_points}")
    study = load_study(results_dir)
    target = None if target is None else target / 100
    study.runs = steps_to_target(study.runs, study.curves, target)
    if baseline is None:
        baseline = study.settings.get("baseline")
    if baseline == "best":  # the best scheme of each problem, whatever the sweep file declares
        baseline = None
    elif baseline is not None:
        from initbench.inits import display_init

        baseline = display_init(baseline)  # the canonical spelling, as in the runs
    order = problem_order(study.runs, study.axes)
    if claims is not None:  # checked before anything is ranked or written
        from initbench.report.claims import read_claims

        claims = read_claims(claims, study.runs, order, list(dict.fromkeys(study.runs["init"])))
    ranking = rank(study.runs, metric, test, baseline, margin_points / 100)
    stated, declared = study_claims(study.settings, study_or_empty(Path(results_dir)), claims)
    if stated:
        study.claims = judge(stated, study.runs, order, metric, test, ranking.alpha, ranking.margin, declared)
    if study.tuning is not None and study.tuning.alternative is not None and len(study.tuning.alternative):
        from initbench.report.tuning import compare_protocols

        alternative = study.tuning.alternative
        other = rank(steps_to_target(alternative, study.curves, target), metric, test,
                     baseline if baseline in set(alternative["init"]) else None, margin_points / 100)
        study.tuning.protocols = compare_protocols(ranking.per_problem, other.per_problem)
    if study.runs.filter(like="step0_").notna().any().any():  # records made before step-0 diagnostics have none
        from initbench.report.predictors import relate

        study.predictors = relate(study.runs, metric)
    out = Path(out or results_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(out)
        stage = Path(tempfile.mkdtemp(prefix=f".report-{os.getpid()}-", dir=out))
    except OSError as exc:
        raise InitbenchError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    try:  # everything is written into a hidden folder first, then moved into place file by file
        staged = _write_files(study, ranking, stage, Path(results_dir))
        wandb_runs = []
        if wandb:
            from initbench.dashboards import log_report

            experiment = str(study.settings.get("name") or study.runs["experiment"].iloc[0])
            wandb_runs = log_report(ranking, staged["plots"], Path(results_dir), wandb[0], wandb[1], metric,
                                    experiment)
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stage.iterdir())}
        write_json(stage / "report.json", {
            "generation": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16], "files": files,
            "metric": metric, "test": test, "baseline": baseline, "margin": margin_points, "runs": len(study.runs),
            "skipped": study.skipped, "partial": study.partial, "notes": ranking.notes,
            "references": ranking.references, "wandb_runs": wandb_runs,
            "claims": [] if study.claims is None else study.claims[["id", "word", "declared", "after_data"]].to_dict(
                "records")})
        remove_old_plots(out)
        for name in OPTIONAL_FILES:  # tables an earlier report of this folder wrote and this one has not
            if not (stage / name).exists():
                (out / name).unlink(missing_ok=True)
        for path in sorted(stage.iterdir(), key=lambda p: p.name == "report.json"):  # report.json last
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    scaled = scaling_table(study.runs, ranking, study.axes)
    files = {"runs": out / "runs.csv", "ranking": out / "ranking.csv", "overall": out / "ranking_overall.csv",
             "markdown": out / "report.md", "html": out / "report.html",
             "answers": {**({"claims": claim_lines(study.claims)} if study.claims is not None else {}),
                         **{f"{axis.name} (scaling)": [plain(line) for line in lines(scaled, axis)]
                            for axis in study.axes},
                         **{problem: [plain(line) for line in answer(problem, ranking)]
                            for problem in order if problem in ranking.references}}}
    return files
