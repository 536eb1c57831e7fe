"""The report's figures (matplotlib, Agg): per problem the lr sensitivity (tuned studies), a forest plot of paired
differences, learning curves, per-run scores, step-0 gradient norms and per-layer dynamics; across problems a rank
heatmap and a performance profile. Axes are zoomed to the schemes that trained; the others are listed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.across import TAUS
from initbench.report.answers import POINTS, in_points
from initbench.report.load import Study
from initbench.report.stats import METRICS_HIGHER_IS_BETTER, Ranking, scored
from initbench.report.tuning import Tuning, sensitivity_frame

ACROSS = "across problems"
SCALING = "scaling"  # plot_all's key for an axis's plot: "scaling mlp.depth"
VERDICT_COLORS = {"best": "#222222", "baseline": "#222222", "better": "#1a9850", "worse": "#d73027",
                  "equivalent": "#4575b4", "inconclusive": "#888888", "failed": "#bbbbbb"}
MAX_LAYERS = 12
ZOOM = 6  # a scheme is drawn when its difference to the reference is within ZOOM x the typical difference


# The report's own plot files (and the per-problem bar charts of earlier versions): a new report removes
# these before drawing, so plots of problems that are gone do not linger; other images are left alone.
PLOT_FILES = ("forest_*.png", "curves_*.png", "final_*.png", "gradnorm0_*.png", "grad_*.png", "update_*.png",
              "ranking_*.png", "sensitivity_*.png", "step0_*.png", "scaling_*.png", "ranks.png", "profile.png")


def remove_old_plots(out: Path) -> None:
    """Delete the plot files an earlier report wrote into `out`."""
    for pattern in PLOT_FILES:
        for path in out.glob(pattern):
            path.unlink()


def slug(problem: str) -> str:
    """A file-name-safe form of a problem name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", problem).strip("_")


def on_scale(table: pd.DataFrame, margin: float) -> pd.Series:
    """The schemes an axis is zoomed to: the reference, and the schemes that mostly trained whose paired
    difference is within ZOOM times the typical one (the median |delta| of those schemes, at least the
    margin). The rest are listed beside the plot, not drawn, so they cannot squash the axis."""
    return table["init"].isin(_zoomed(table, margin)[0])


def _zoomed(table: pd.DataFrame, margin: float) -> tuple[list[str], float]:
    """(schemes on the scale, the axis half-width that keeps the scale readable)."""
    sane = (table["verdict"] != "failed") & (table["failure_rate"] < 0.5)
    reference = table["init"] == table["reference"]
    others = table.loc[sane & ~reference, "delta"].abs().dropna()
    scale = max(margin, float(others.median()) if len(others) else 0.0)
    inside = sane & (table["delta"].abs() <= ZOOM * scale)
    return table.loc[inside | reference, "init"].tolist(), 2 * ZOOM * scale


def plot_all(study: Study, ranking: Ranking, out: Path) -> dict[str, list[Path]]:
    """Every figure of the report; returns the paths per problem (and ACROSS for the cross-problem ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, list[Path]] = {}
    all_runs = scored(study.runs, ranking.metric)
    for problem, table in ranking.per_problem.groupby("problem", sort=True):
        table = table.reset_index(drop=True)
        order = table["init"].tolist()
        palette = plt.get_cmap("tab20" if len(order) > 10 else "tab10").colors
        colors = dict(zip(order, palette, strict=False))
        sane = table.loc[on_scale(table, ranking.margin), "init"].tolist()
        runs = all_runs[all_runs["problem"] == problem]
        name = slug(problem)
        paths = [_forest(plt, problem, table, ranking, out / f"forest_{name}.png"),
                 _curves(plt, problem, study, runs, order, sane, colors, out / f"curves_{name}.png"),
                 _final(plt, problem, runs, order, sane, colors, ranking.metric, out / f"final_{name}.png")]
        layers = study.layers.merge(runs[["run_id", "init"]], on="run_id")
        if len(layers):
            paths.append(_heatmap0(plt, problem, layers, order, sane, out / f"gradnorm0_{name}.png"))
            for stat, what in (("grad_norm", "gradient L2 norm"), ("update_ratio", "|update| / |weight|")):
                if layers[stat].notna().any():
                    paths.append(_dynamics(plt, problem, layers, stat, what, order, sane, colors,
                                           out / f"{stat.split('_')[0]}_{name}.png"))
        if study.predictors is not None:
            from initbench.report.predictors import plot_step0

            paths.append(plot_step0(plt, problem, runs, study.predictors, ranking.metric, colors,
                                    out / f"step0_{name}.png"))
        if study.tuning is not None and (study.tuning.runs["problem"] == problem).any():
            paths.insert(0, _sensitivity(plt, problem, study.tuning, order, colors, out / f"sensitivity_{name}.png"))
        plots[problem] = paths
    if ranking.per_problem["problem"].nunique() > 1:
        plots[ACROSS] = [_ranks(plt, ranking, out / "ranks.png"), _profile(plt, ranking, out / "profile.png")]
    if study.axes:
        from initbench.report.scaling import plot_scaling, scaling_table

        table = scaling_table(study.runs, ranking, study.axes)
        for axis in study.axes:
            plots[f"{SCALING} {axis.name}"] = [plot_scaling(plt, axis, table, ranking.metric,
                                                            out / f"scaling_{slug(axis.name)}.png")]
    return plots


def _forest(plt: Any, problem: str, table: pd.DataFrame, ranking: Ranking, path: Path) -> Path:
    """Each scheme's paired difference to the reference in accuracy points, with its 95% interval."""
    names, limit = _zoomed(table, ranking.margin)
    table = in_points(table)
    limit *= POINTS
    shown = table["init"].isin(names)
    inside, outside = table[shown].iloc[::-1], table[~shown]
    wide = len(outside) > 0
    fig = plt.figure(figsize=(10.5 if wide else 7.5, max(0.38 * len(inside), 0.33 * 3 * len(outside)) + 1.8))
    ax = fig.add_axes((0.3, 0.18, 0.45 if wide else 0.65, 0.7))
    m = ranking.margin * POINTS
    ax.axvspan(-m, m, color="#4575b4", alpha=0.08, lw=0)
    ax.axvline(0, color="#222222", lw=1)
    y = np.arange(len(inside))
    for k, (_, row) in enumerate(inside.iterrows()):
        color = VERDICT_COLORS[row["verdict"]]
        lo, hi = row["delta_ci_low"], row["delta_ci_high"]
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [k, k], color=color, lw=2)
        ax.plot([0 if row["init"] == row["reference"] else row["delta"]], [k], "o", color=color, ms=6)
    ax.set_yticks(y, [f"{r['init']}  ({r['verdict']})" for _, r in inside.iterrows()], fontsize=8)
    ends = np.concatenate([inside[["delta_ci_low", "delta_ci_high", "delta"]].to_numpy(dtype=float).ravel(),
                           [-m, m]])
    ends = np.clip(ends[np.isfinite(ends)], -limit, limit)  # a CI running further is cut at the frame
    pad = 0.08 * (ends.max() - ends.min())
    ax.set_xlim(ends.min() - pad, ends.max() + pad)
    ax.set_xlabel(f"paired difference in {ranking.metric} to {table['reference'].iloc[0]}, accuracy points "
                  "(mean, 95% t-interval)")
    ax.set_title(f"{problem}: difference to the reference; shaded: ±margin {m:g} points", fontsize=10)
    if wide:
        lines = ["off the scale:"]
        for _, r in outside.iterrows():
            ci = (f" [{r['delta_ci_low']:+.1f}, {r['delta_ci_high']:+.1f}]" if np.isfinite(r["delta_ci_low"]) else "")
            lines += [f"{r['init']} ({r['verdict']})", f"  Δ {r['delta']:+.1f}{ci} points",
                      f"  {r['failure_rate']:.0%} of runs failed"]
        fig.text(0.78, 0.88, "\n".join(lines), va="top", fontsize=7, family="monospace")
    return _save(fig, path, tight=False)


def _band(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """Median and interquartile range over seeds at each step (inside the metric's own range)."""
    values = frame.replace([np.inf, -np.inf], np.nan).dropna(subset=[col])
    return values.groupby("step")[col].quantile([0.25, 0.5, 0.75]).unstack()


def _curves(plt: Any, problem: str, study: Study, runs: pd.DataFrame, order: list[str], sane: list[str],
            colors: dict[str, Any], path: Path) -> Path:
    curves = study.curves.merge(runs[["run_id", "init"]], on="run_id")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    zoom_values, loss_values = [], []
    for init in order:
        c = curves[curves["init"] == init]
        style = {"color": colors[init], "lw": 1.6 if init in sane else 0.9, "ls": "-" if init in sane else "--"}
        # dashed: failed or far behind; those are left out of the zoomed panel
        for ax, col in ((axes[0], "val_acc"), (axes[1], "val_acc"), (axes[2], "train_loss")):
            if ax is axes[1] and init not in sane:
                continue
            b = _band(c, col)
            b = b.where(b > 0) if col == "train_loss" else b * POINTS
            if not len(b):
                continue
            ax.plot(b.index, b[0.5], label=init, **style)
            ax.fill_between(b.index, b[0.25], b[0.75], color=colors[init], alpha=0.13, lw=0)
            if ax is axes[1]:
                late = b[b.index >= b.index.max() / 2]
                zoom_values += [late[0.25].min(), late[0.75].max()]
            if col == "train_loss":
                loss_values += b[0.5].dropna().tolist()
    axes[0].set(title=f"{problem}: validation accuracy", xlabel="step",
                ylabel="val acc, points (median, IQR over seeds)", ylim=(0, POINTS))
    axes[1].set(title="validation accuracy, zoomed to the schemes that trained", xlabel="step")
    zoom = np.array([v for v in zoom_values if np.isfinite(v)])
    if len(zoom):
        pad = max(1.0, 0.1 * (zoom.max() - zoom.min()))
        axes[1].set_ylim(max(0, zoom.min() - pad), min(POINTS, zoom.max() + pad))
    axes[2].set(title="train loss (median, IQR over seeds)", xlabel="step", yscale="log")
    if loss_values:
        lo, hi = np.percentile(loss_values, [1, 99])
        axes[2].set_ylim(lo / 1.5, hi * 1.5)
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:  # none when no run of the problem logged a curve (all failed before training)
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * (1 + (max(1, len(labels)) - 1) // 5), 1, 1))
    return _save(fig, path, tight=False)


def _final(plt: Any, problem: str, runs: pd.DataFrame, order: list[str], sane: list[str], colors: dict[str, Any],
           metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(order)), 4.5))
    data = [runs.loc[runs["init"] == i, "score"].astype(float).dropna().to_numpy() * POINTS for i in order]
    inside = np.concatenate([d for i, d in zip(order, data, strict=True) if i in sane] or [np.zeros(0)])
    lo, hi = (inside.min(), inside.max()) if len(inside) else (0.0, float(POINTS))
    pad = max(0.5, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), min(float(POINTS), hi + pad)
    rng = np.random.default_rng(0)
    for k, (init, vals) in enumerate(zip(order, data, strict=True), 1):
        x = k + rng.uniform(-0.12, 0.12, len(vals))
        clipped = (vals < lo) | (vals > hi)
        ax.scatter(x[~clipped], vals[~clipped], s=14, color=colors[init], zorder=3)
        ax.scatter(x[clipped], np.clip(vals[clipped], lo, hi), s=22, marker="v", color=colors[init], zorder=3)
        if len(vals) and not clipped.all():
            ax.hlines(np.median(vals), k - 0.3, k + 0.3, color="#222222", lw=1.2)
    ax.set_xticks(range(1, len(order) + 1), order, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(lo, hi)
    ax.set(title=f"{problem}: {METRICS_HIGHER_IS_BETTER[metric].split(' (')[0]} per run "
                 "(bar: median; triangles: off the scale)", ylabel=f"{metric}, accuracy points")
    return _save(fig, path)


def _sensitivity(plt: Any, problem: str, tuning: Tuning, order: list[str], colors: dict[str, Any],
                 path: Path) -> Path:
    """Tuning score against lr, one line per init (mean over the tuning seeds, band: min to max), chosen lr marked."""
    frame = sensitivity_frame(tuning, problem)
    chosen = tuning.table[tuning.table["problem"] == problem].set_index("init")["lr"]
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for init in order:
        f = frame[frame["init"] == init].sort_values("lr")
        if not len(f):
            continue
        ax.plot(f["lr"], f["mean"], marker=".", color=colors[init], lw=1.4, label=init)
        ax.fill_between(f["lr"], f["min"], f["max"], color=colors[init], alpha=0.12, lw=0)
        at = f[f["lr"] == chosen.get(init)]
        ax.scatter(at["lr"], at["mean"], s=90, marker="*", color=colors[init], edgecolor="#222222", zorder=4)
    seeds = ", ".join(map(str, tuning.tune.seeds))
    ax.set(xscale="log", xlabel="learning rate", ylabel=f"{tuning.tune.metric} (tuning seeds)",
           title=f"{problem}\nlr sensitivity on tuning seeds {seeds} (mean, band min-max; star: chosen lr)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _heatmap0(plt: Any, problem: str, layers: pd.DataFrame, order: list[str], sane: list[str], path: Path) -> Path:
    g = layers[layers["step"] == 0].dropna(subset=["grad_norm"])
    names = list(dict.fromkeys(g["layer"]))
    heat = g.groupby(["layer", "init"])["grad_norm"].median().unstack().reindex(index=names, columns=order)
    values = heat.to_numpy(dtype=float)
    logs = np.log10(np.where(values > 0, values, np.nan))
    ref = logs[:, [order.index(i) for i in sane]] if sane else logs
    finite = ref[np.isfinite(ref)] if np.isfinite(ref).any() else logs[np.isfinite(logs)]
    vmin, vmax = (np.percentile(finite, [2, 98]) if len(finite) else (0, 1))
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(order) + 3), 0.35 * len(names) + 2))
    im = ax.imshow(np.ma.masked_invalid(logs), aspect="auto", cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1e-6))
    for (i, j), v in np.ndenumerate(values):
        if v == 0:
            ax.text(j, i, "0", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label="log10 gradient L2 norm (median over seeds)", extend="both")
    ax.set_title(f"{problem}: per-layer gradient norm at step 0 (grey 0: no gradient); colour scale from the "
                 "schemes that trained", fontsize=9)
    return _save(fig, path)


def _dynamics(plt: Any, problem: str, layers: pd.DataFrame, stat: str, what: str, order: list[str],
              sane: list[str], colors: dict[str, Any], path: Path) -> Path:
    names = [n for n in dict.fromkeys(layers["layer"]) if n != "total"]
    weights = [n for n in names if n.endswith("weight")] or names
    if len(weights) > MAX_LAYERS:
        weights = [weights[i] for i in np.linspace(0, len(weights) - 1, MAX_LAYERS).round().astype(int)]
    cols = min(4, len(weights))
    rows = -(-len(weights) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows + 0.6), squeeze=False, sharex=True)
    for ax, layer in zip(axes.ravel(), weights, strict=False):
        sub = layers[layers["layer"] == layer]
        kept = []
        for init in order:
            med = sub[sub["init"] == init].replace([np.inf, -np.inf], np.nan).groupby("step")[stat].median()
            med = med[med > 0]
            if len(med):
                ax.plot(med.index, med.to_numpy(), color=colors[init], lw=1.3 if init in sane else 0.8,
                        ls="-" if init in sane else "--", label=init)
                kept += med.tolist() if init in sane else []
        ax.set_yscale("log")
        if kept:  # the scale of the schemes that trained; an exploding one runs off the frame
            lo, hi = np.percentile(kept, [1, 99])
            ax.set_ylim(lo / 3, hi * 3)
        ax.set_title(layer, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(weights):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"{problem}: per-layer {what} over training (median over seeds; dashed: schemes that failed "
                 "or fell far behind)", fontsize=10)
    return _save(fig, path)


def _ranks(plt: Any, ranking: Ranking, path: Path) -> Path:
    t = ranking.per_problem
    heat = t.pivot_table(index="init", columns="problem", values="rank", aggfunc="first")
    heat = heat.loc[heat.mean(axis=1).sort_values().index]
    verdicts = t.pivot_table(index="init", columns="problem", values="verdict", aggfunc="first").reindex_like(heat)
    fig, ax = plt.subplots(figsize=(2.2 * heat.shape[1] + 4, 0.4 * heat.shape[0] + 1.8))
    im = ax.imshow(heat.to_numpy(dtype=float), aspect="auto", cmap="viridis_r")
    for (i, j), v in np.ndenumerate(heat.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f} {verdicts.iat[i, j]}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(heat.shape[1]), heat.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(heat.shape[0]), heat.index, fontsize=8)
    fig.colorbar(im, ax=ax, label="rank within the problem")
    ax.set_title(f"rank by {ranking.metric} in each problem, with the verdict against its reference", fontsize=10)
    return _save(fig, path)


def _profile(plt: Any, ranking: Ranking, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for init, g in ranking.profile.groupby("init", sort=False):
        ax.step(g["tau"] * 100, g["fraction"], where="post", label=init, lw=1.4)
    ax.axvline(ranking.margin * 100, color="#4575b4", lw=0.8, ls=":")
    ax.set(xlim=(0, TAUS.max() * 100), ylim=(-0.02, 1.02), xlabel=f"tau: {ranking.metric} points below the best",
           ylabel="fraction of problems within tau of the best",
           title="performance profile (dotted: the equivalence margin)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
