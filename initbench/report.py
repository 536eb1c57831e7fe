"""Run records -> one pandas DataFrame -> ranking with honest statistics, plots, HTML/Markdown/CSV.

The DataFrame of runs (`runs.csv`) is the contract between training and reporting: nothing here
trains or reruns anything.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from initbench.errors import InitbenchError
from initbench.results import CONFIG, MANIFEST, METRICS, STATUSES, SUMMARY, write_json

METRICS_HIGHER_IS_BETTER = {
    "test_acc": "final test accuracy",
    "best_val_acc": "best validation accuracy",
    "val_acc_final": "final validation accuracy",
    "auc_val_acc": "area under the validation-accuracy curve (mean val accuracy over the planned evaluations)",
}
TESTS = ("wilcoxon", "ttest")
ALPHA = 0.05
BOOTSTRAP = 10_000


@dataclass
class Study:
    """Everything the report reads from a results folder."""

    runs: pd.DataFrame
    curves: pd.DataFrame  # long form: run_id, step, val_acc, train_loss
    grads0: pd.DataFrame  # long form: run_id, layer, grad_norm (step 0)
    skipped: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, str]] = field(default_factory=list)


def load_study(results_dir: Path) -> Study:
    """Read every run record under `results_dir`; unfinished or corrupt records are listed, not fatal."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InitbenchError(f"results folder {results_dir} does not exist")
    rows, curves, grads, skipped, versions = [], [], [], [], []
    for config_path in sorted(results_dir.rglob(CONFIG)):
        run_dir = config_path.parent
        rel = run_dir.relative_to(results_dir)
        try:
            config = json.loads(config_path.read_text())
            spec = config["spec"]
        except (ValueError, KeyError, OSError) as exc:
            skipped.append(f"{rel}: unreadable {CONFIG} ({type(exc).__name__})")
            continue
        if not (run_dir / SUMMARY).exists():
            skipped.append(f"{rel}: no {SUMMARY} (unfinished run; `initbench sweep` reruns it)")
            continue
        try:
            summary = json.loads((run_dir / SUMMARY).read_text())
            if summary.get("status") not in STATUSES:
                raise ValueError("no valid status")
            metrics = pd.read_csv(run_dir / METRICS) if summary["status"] != "failed" else pd.DataFrame()
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            skipped.append(f"{rel}: corrupt record ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        run_id = config.get("run_id", run_dir.name)
        rows.append(_run_row(run_id, rel, config, spec, summary))
        if config.get("versions") not in versions:
            versions.append(config.get("versions"))
        if len(metrics) and "step" in metrics:
            c = metrics[["step"]].assign(run_id=run_id,
                                         val_acc=metrics.get("val/acc"), train_loss=metrics.get("train/loss"))
            curves.append(c.dropna(subset=["val_acc", "train_loss"], how="all"))
            step0 = metrics[metrics["step"] == 0]
            if len(step0):
                g = step0.filter(like="grad_norm/").iloc[0].dropna()
                g.index = [k[len("grad_norm/"):] for k in g.index]
                g = g.reindex([*_layer_order(run_dir), "total"]).dropna()
                grads.append(pd.DataFrame({"run_id": run_id, "layer": g.index, "grad_norm": g.to_numpy(dtype=float)}))
    if not rows:
        detail = f" ({len(skipped)} unfinished or corrupt)" if skipped else ""
        raise InitbenchError(f"no complete run records under {results_dir}{detail}")
    runs = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["step", "run_id", "val_acc", "train_loss"])
    grads_df = pd.concat(grads, ignore_index=True) if grads else pd.DataFrame(columns=["run_id", "layer", "grad_norm"])
    runs = _add_curve_metrics(runs, curves_df)
    sweep_file = results_dir / "sweep.json"
    settings = json.loads(sweep_file.read_text()).get("source", {}) if sweep_file.exists() else {}
    return Study(runs, curves_df, grads_df, skipped, settings, versions)


def _layer_order(run_dir: Path) -> list[str]:
    """Parameter names in model order, from the run's init manifest."""
    try:
        return [r["name"] for r in json.loads((run_dir / MANIFEST).read_text())["records"]]
    except (OSError, ValueError, KeyError):
        return []


def _run_row(run_id: str, rel: Path, config: dict, spec: dict, summary: dict) -> dict[str, Any]:
    from initbench.inits import parse_init
    from initbench.spec import format_call, parse_call

    data = config.get("data", {})
    return {
        "run_id": run_id, "experiment": spec.get("experiment"), "dataset": spec["dataset"],
        "model": format_call(*parse_call(spec["model"], "model")),
        "init": str(parse_init(spec["init"])), "seed": spec["seed"], "status": summary["status"],
        "test_acc": summary.get("test_acc"), "test_loss": summary.get("test_loss"),
        "best_val_acc": summary.get("best_val_acc"), "val_acc_final": summary.get("val_acc_final"),
        "train_loss_final": summary.get("train_loss_final"), "diverged_step": summary.get("diverged_step"),
        "steps": summary.get("steps"), "epochs": spec.get("epochs"), "wall_time_s": summary.get("wall_time_s"),
        "images_per_s": summary.get("images_per_s"), "num_classes": data.get("num_classes"),
        "device": config.get("device"), "path": str(rel),
    }


def _add_curve_metrics(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """auc_val_acc: mean val accuracy over the planned evaluations (missing ones, after a divergence, count 0)."""
    val = curves.dropna(subset=["val_acc"]).groupby("run_id")["val_acc"].agg(["sum", "count"])
    runs = runs.merge(val, how="left", left_on="run_id", right_index=True)
    runs["problem"] = runs["dataset"] + "_" + runs["model"]
    if runs["experiment"].nunique() > 1:
        runs["problem"] = runs["experiment"] + "/" + runs["problem"]
    planned = runs.groupby("problem")["count"].transform("max")
    runs["auc_val_acc"] = runs["sum"] / planned
    return runs.drop(columns=["sum", "count"])


def steps_to_target(runs: pd.DataFrame, curves: pd.DataFrame, target: float | None) -> pd.DataFrame:
    """First step at which val accuracy reaches the target (NaN: never reached, diverged included).
    Default target per problem: 90% of the best val accuracy any run reached there."""
    runs = runs.copy()
    best = runs.groupby("problem")["best_val_acc"].transform("max")
    runs["target"] = target if target is not None else (0.9 * best).round(4)
    val = curves.dropna(subset=["val_acc"]).merge(runs[["run_id", "target"]], on="run_id")
    hit = val[val["val_acc"] >= val["target"]].groupby("run_id")["step"].min()
    runs["steps_to_target"] = runs["run_id"].map(hit)
    return runs


# ---------------------------------------------------------------- statistics


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


# ---------------------------------------------------------------- plots


def _plots(study: Study, ranking: Ranking, metric: str, out: Path) -> dict[str, list[Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, list[Path]] = {}
    for problem, table in ranking.per_problem.groupby("problem", sort=True):
        order = table["init"].tolist()
        colors = dict(zip(order, plt.get_cmap("tab20" if len(order) > 10 else "tab10").colors, strict=False))
        runs = study.runs[study.runs["problem"] == problem]
        slug = problem.replace("/", "__")
        paths = []

        curves = study.curves.merge(runs[["run_id", "init"]], on="run_id")
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for init in order:
            c = curves[curves["init"] == init]
            for ax, col in ((ax1, "val_acc"), (ax2, "train_loss")):
                s = c.dropna(subset=[col]).groupby("step")[col].agg(["mean", "std"])
                if len(s):
                    low = s["mean"] - s["std"].fillna(0)
                    if col == "train_loss":  # log axis: keep the band's lower edge positive
                        low = low.clip(lower=s["mean"] / 10)
                    ax.plot(s.index, s["mean"], label=init, color=colors[init], lw=1.6)
                    ax.fill_between(s.index, low, s["mean"] + s["std"].fillna(0), color=colors[init], alpha=0.15)
        ax1.set(title=f"{problem}: validation accuracy (mean ± std over seeds)", xlabel="step", ylabel="val acc")
        ax2.set(title="train loss (mean ± std over seeds)", xlabel="step", ylabel="train loss", yscale="log")
        ax1.legend(fontsize=7, loc="lower right")
        paths.append(_save(fig, out / f"curves_{slug}.png"))

        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(order)), 4.5))
        data = [runs.loc[runs["init"] == i, metric].dropna().to_numpy() for i in order]
        ax.boxplot(data, tick_labels=order, showfliers=False)
        rng = np.random.default_rng(0)
        for k, (init, vals) in enumerate(zip(order, data, strict=True), 1):
            ax.scatter(k + rng.uniform(-0.12, 0.12, len(vals)), vals, s=14, color=colors[init], zorder=3)
        ax.set(title=f"{problem}: {METRICS_HIGHER_IS_BETTER[metric].split(' (')[0]} per run", ylabel=metric)
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", fontsize=8)
        paths.append(_save(fig, out / f"final_{slug}.png"))

        g = study.grads0.merge(runs[["run_id", "init"]], on="run_id")
        if len(g):
            layers = list(dict.fromkeys(g["layer"]))
            heat = g.groupby(["layer", "init"])["grad_norm"].mean().unstack().reindex(index=layers, columns=order)
            values = np.log10(heat.to_numpy(dtype=float).clip(min=1e-12))
            fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(order) + 3), 0.35 * len(layers) + 2))
            im = ax.imshow(values, aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=8)
            ax.set_yticks(range(len(layers)), layers, fontsize=7)
            fig.colorbar(im, ax=ax, label="log10 gradient L2 norm at step 0")
            ax.set_title(f"{problem}: per-layer gradient norm at step 0 (vanishing / exploding)")
            paths.append(_save(fig, out / f"gradnorm0_{slug}.png"))

        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(order)), 4))
        err = np.array([table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]]).clip(min=0)
        ax.bar(order, table["mean"], yerr=np.nan_to_num(err), color=[colors[i] for i in order], capsize=3)
        ax.set(title=f"{problem}: mean {metric} with 95% bootstrap CI", ylabel=metric)
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", fontsize=8)
        paths.append(_save(fig, out / f"ranking_{slug}.png"))
        plots[problem] = paths
    return plots


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- documents

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

