"""The tuning protocol in the report: which runs tuned the lr, what each init's lr is (by the sweep's own rule, on
the same records), how sensitive each init is to the lr, and how the ranking changes with the protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from initbench.plan.sweep import Sweep
from initbench.plan.tune import Tune, choose, score, within

WITHIN_POINTS = 1.0  # tuneability: the lr range whose mean is within this many accuracy points of the best


@dataclass
class Tuning:
    """What the report knows of a tuned study."""

    tune: Tune
    reference: str  # the shared protocol's scheme
    runs: pd.DataFrame  # the tuning runs of the study's plan
    table: pd.DataFrame  # per (problem, init): chosen lr per protocol, tuning score, tuneability
    comparison_seeds: list[int]
    alternative: pd.DataFrame | None = None  # the second protocol's comparison runs (per_init: both)
    waiting: int = 0  # comparison runs whose lr waits for tuning runs not recorded yet
    protocols: pd.DataFrame = field(default_factory=pd.DataFrame)  # rank under each protocol, when both ran


def split_runs(runs: pd.DataFrame, sweep: Sweep) -> tuple[pd.DataFrame, Tuning, list[str]]:
    """(the main protocol's comparison runs, the Tuning, the records left out with why). The runs are picked by id
    from the plan `sweep.stage2` makes of these same records, so the report ranks exactly what the sweep trained
    and cannot choose another lr. `runs` are named by problem without the lr."""
    from initbench.inits import display_init

    tune = sweep.tune
    assert tune is not None
    scores = dict(zip(runs["run_id"], (score(s, v, c) for s, v, c in zip(
        runs["status"], runs[tune.metric], runs["num_classes"], strict=True)), strict=True))
    stages = sweep.stage2(lambda spec: scores.get(spec.run_id))
    picked = [runs[runs["run_id"].isin({r.run_id for r in stages[p][0]})] for p in tune.protocols]
    tuned = runs[runs["run_id"].isin({r.run_id for r in sweep.tuning})].assign(
        score=lambda d: d["run_id"].map(scores))
    used = set(tuned["run_id"]).union(*(p["run_id"] for p in picked))
    left_out = [f"{path}: not a run of this study's plan now (an earlier grid, other seeds or settings, or an lr no "
                "longer chosen)" for path in runs.loc[~runs["run_id"].isin(used), "path"]]
    rows = []
    for (problem, init), g in tuned.groupby(["problem", "init"], sort=True):
        by_lr = {lr: h["score"].tolist() for lr, h in g.groupby("lr")}
        complete = len(g) == len(tune.seeds) * len(tune.lrs)
        low, high, decades = within(by_lr, WITHIN_POINTS) if complete else (math.nan,) * 3
        lr = choose(by_lr) if complete else math.nan
        rows.append({"problem": problem, "init": init, "lr": lr,
                     "tuning_score": g.loc[g["lr"] == lr, "score"].mean() if complete else math.nan,
                     "at_edge": complete and len(tune.lrs) > 1 and lr in (min(tune.lrs), max(tune.lrs)),
                     "all_failed": bool((g["score"] == -math.inf).all()),
                     "lr_low": low, "lr_high": high, "decades": decades,
                     "tuning_runs": f"{len(g)}/{len(tune.seeds) * len(tune.lrs)}" + ("" if complete else " (missing)"),
                     "diverged": int((g["status"] == "diverged").sum())})
    table = pd.DataFrame(rows, columns=["problem", "init", "lr", "tuning_score", "at_edge", "all_failed", "lr_low",
                                        "lr_high", "decades", "tuning_runs", "diverged"])
    reference = display_init(sweep.reference)
    shared = table[table["init"] == reference].set_index("problem")["lr"]
    table["shared_lr"] = table["problem"].map(shared)
    seeds = sorted({r.seed for r in sweep.runs})
    tuning = Tuning(tune, reference, tuned.drop(columns="score"), table, seeds,
                    picked[1] if len(picked) > 1 else None, sum(len(w) for _, w in stages.values()))
    return picked[0], tuning, left_out


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
