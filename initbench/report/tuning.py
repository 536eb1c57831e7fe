"""The tuning protocol in the report: which runs tuned the lr, what each init's lr is (by the sweep's own rule, on
the same records), how sensitive each init is to the lr, and how the ranking changes with the protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from initbench.tune import Tune, choose, score, within

WITHIN_POINTS = 1.0  # tuneability: the lr range whose mean is within this many accuracy points of the best


@dataclass
class Tuning:
    """What the report knows of a tuned study."""

    tune: Tune
    reference: str  # the shared protocol's scheme
    runs: pd.DataFrame  # the tuning runs (seed in tune.seeds, lr on the grid), with their `score`
    table: pd.DataFrame  # per (problem, init): chosen lr per protocol, tuning score, tuneability
    comparison_seeds: list[int]
    alternative: pd.DataFrame | None = None  # the second protocol's comparison runs (per_init: both)
    protocols: pd.DataFrame = field(default_factory=pd.DataFrame)  # rank under each protocol, when both ran


def reference_scheme(settings: dict[str, Any]) -> str | None:
    """The shared protocol's scheme as the report names it: the sweep file's baseline, else its first init."""
    from initbench.report.load import display_init

    chosen = settings.get("baseline")
    if chosen is None:
        inits = settings.get("inits") or []
        chosen = inits[0] if isinstance(inits, list) and inits else None
    return None if chosen is None else display_init(chosen)


def split_runs(runs: pd.DataFrame, tune: Tune, reference: str) -> tuple[pd.DataFrame, Tuning, list[str]]:
    """(the main protocol's comparison runs, the Tuning, the records left out with why). `runs` are named by problem
    without the lr (a tuned study's problems do not split by lr)."""
    runs = runs.copy()
    runs["score"] = [score(s, v, c) for s, v, c in zip(runs["status"], runs[tune.metric].astype(float),
                                                     runs["num_classes"], strict=True)]
    tuning_seed = runs["seed"].isin(tune.seeds)
    on_grid = runs["lr"].isin(tune.lrs)
    left_out = [f"{p}: a tuning run at lr {lr:g}, not on the tuning grid (from an earlier grid)"
                for p, lr in runs.loc[tuning_seed & ~on_grid, ["path", "lr"]].itertuples(index=False)]
    tuned = runs[tuning_seed & on_grid]
    rows = []
    for (problem, init), g in tuned.groupby(["problem", "init"], sort=True):
        scores = {lr: h["score"].tolist() for lr, h in g.groupby("lr")}
        complete = all(len(s) == len(tune.seeds) for s in scores.values()) and len(scores) == len(tune.lrs)
        low, high, decades = within(scores, WITHIN_POINTS)
        lr = choose(scores)
        rows.append({"problem": problem, "init": init, "lr": lr, "tuning_score": g.loc[g["lr"] == lr, "score"].mean(),
                     "at_edge": lr in (min(tune.lrs), max(tune.lrs)) and len(tune.lrs) > 1,
                     "lr_low": low, "lr_high": high, "decades": decades,
                     "tuning_runs": f"{len(g)}/{len(tune.seeds) * len(tune.lrs)}" + ("" if complete else " (missing)"),
                     "diverged": int((g["status"] == "diverged").sum())})
    table = pd.DataFrame(rows, columns=["problem", "init", "lr", "tuning_score", "at_edge", "lr_low", "lr_high",
                                        "decades", "tuning_runs", "diverged"])
    shared = table[table["init"] == reference].set_index("problem")["lr"]
    table["shared_lr"] = table["problem"].map(shared)
    chosen = {"per_init": table.set_index(["problem", "init"])["lr"],
              "shared": table.set_index(["problem", "init"])["shared_lr"]}
    compare = runs[~tuning_seed]
    picked = []
    for protocol in tune.protocols:
        want = pd.Series(list(zip(compare["problem"], compare["init"], strict=True)), index=compare.index).map(
            chosen[protocol])
        picked.append(compare[compare["lr"] == want])
    used = set().union(*(p.index for p in picked))
    left_out += [f"{p}: a comparison run at lr {lr:g}, not the lr now chosen for {init} (from an earlier grid)"
                 for p, lr, init in compare.loc[~compare.index.isin(used), ["path", "lr", "init"]].itertuples(
                     index=False)]
    seeds = sorted(int(s) for s in compare["seed"].unique())
    tuning = Tuning(tune, reference, tuned.drop(columns="score"), table, seeds,
                    picked[1].drop(columns="score") if len(picked) > 1 else None)
    return picked[0].drop(columns="score"), tuning, left_out


def compare_protocols(main: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Per problem and init: rank, lr and mean under the per-init lr and under the shared lr, and the change."""
    cols = ["problem", "init", "rank", "lr", "mean", "verdict"]
    both = main[cols].merge(other[cols], on=["problem", "init"], suffixes=("_per_init", "_shared"), how="outer")
    both["rank_change"] = both["rank_shared"] - both["rank_per_init"]  # > 0: the init ranks better when tuned
    return both.sort_values(["problem", "rank_per_init"]).reset_index(drop=True)


def sensitivity_frame(tuning: Tuning, problem: str) -> pd.DataFrame:
    """Per init and lr of one problem: mean, min and max tuning score over the tuning seeds (-inf scores: NaN)."""
    runs = tuning.runs[tuning.runs["problem"] == problem].copy()
    runs["score"] = [score(s, v, c) for s, v, c in zip(runs["status"], runs[tuning.tune.metric].astype(float),
                                                     runs["num_classes"], strict=True)]
    runs.loc[runs["score"] == -math.inf, "score"] = math.nan
    return runs.groupby(["init", "lr"])["score"].agg(["mean", "min", "max"]).reset_index()
