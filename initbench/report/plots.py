"""The report's figures, one set per problem (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from initbench.report.load import Study
from initbench.report.stats import METRICS_HIGHER_IS_BETTER, Ranking


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
