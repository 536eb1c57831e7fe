"""The learning-rate-fair protocol: a sweep's `tune:` block, and the one rule that picks each init's lr.

Stage 1 trains every (problem, init, lr) of the grid on the tuning seeds; stage 2 trains the comparison seeds at
the chosen lr. The sweep (to build stage 2) and the report (to show what was chosen) both call `choose`, on the
same records, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from initbench.errors import InitbenchError
from initbench.spec import SEED_LIMIT

# This module stays light (no torch, no pandas at import): the sweep file is checked before anything loads.
KEYS = ("lr", "seeds", "per_init", "metric")
METRICS = ("val_acc_final", "best_val_acc")  # validation metrics a run's summary holds: tuning never sees test
PROTOCOLS = {True: ("per_init",), False: ("shared",), "both": ("per_init", "shared")}
TIE = 9  # scores equal to this many decimals are a tie (the smaller lr wins)


@dataclass(frozen=True)
class Tune:
    """A parsed `tune:` block. `per_init`: True (each init its own lr), False (one lr for all: the reference
    scheme's best) or "both" (stage 2 trains both protocols; the report compares the rankings)."""

    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    per_init: bool | str = True
    metric: str = "val_acc_final"

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols stage 2 trains, the main one (the report's ranking) first."""
        return PROTOCOLS[self.per_init]

    def describe(self) -> str:
        return (f"lr {', '.join(f'{lr:g}' for lr in self.lrs)} on tuning seeds "
                f"{', '.join(map(str, self.seeds))}, chosen by the mean {self.metric}")


def _as_number(v: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string: a learning rate written so is taken as the number it says."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def lr_grid(value: Any, where: str) -> tuple[float, ...]:
    """`[0.01, 0.1]`, one lr, or `{log_range: [1e-3, 1], points: 7}` (log-spaced, 3 significant digits) -> sorted
    lrs."""
    value = [value] if _number(_as_number(value)) else value
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("log_range", "points")]
        if unknown:
            raise InitbenchError(f"{where}: unknown key {unknown[0]} in tune lr; valid: log_range, points")
        bounds, points = value.get("log_range"), value.get("points")
        bounds = [_as_number(b) for b in bounds] if isinstance(bounds, list) else bounds
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_number(b) for b in bounds)
                or not 0 < bounds[0] < bounds[1]):
            raise InitbenchError(f"{where}: tune lr log_range must be [low, high] with 0 < low < high, got {bounds!r}")
        if not isinstance(points, int) or isinstance(points, bool) or not 2 <= points <= 1000:
            raise InitbenchError(f"{where}: tune lr points must be a whole number from 2 to 1000, got {points!r}")
        low, high = (float(b) for b in bounds)
        lrs = [float(f"{low * (high / low) ** (i / (points - 1)):.3g}") for i in range(points)]
    elif isinstance(value, list):
        if not value:
            raise InitbenchError(f"{where}: empty grid: tune lr is an empty list")
        value = [_as_number(v) for v in value]
        bad = [v for v in value if not _number(v) or not 0 < v < math.inf]
        if bad:
            raise InitbenchError(f"{where}: every tune lr must be a positive number, got {bad[0]!r}")
        lrs = [float(v) for v in value]
    else:
        raise InitbenchError(f"{where}: tune lr must be a list of learning rates or {{log_range: [low, high], "
                             f"points: N}}, got {value!r}")
    if len(set(lrs)) != len(lrs):
        raise InitbenchError(f"{where}: tune lr lists the same learning rate twice (at 3 significant digits for a "
                             f"log_range): {lrs}")
    return tuple(sorted(lrs))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_tune(value: Any, where: str, comparison_seeds: Iterable[int] = ()) -> Tune | None:
    """The `tune:` block checked (None when absent); tuning seeds may not overlap the comparison seeds."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InitbenchError(f"{where}: 'tune' must be a mapping with keys {', '.join(KEYS)}, got {value!r}")
    unknown = [k for k in value if k not in KEYS]
    if unknown:
        raise InitbenchError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))} "
                             f"in tune; valid: {', '.join(KEYS)}")
    if "lr" not in value or "seeds" not in value:
        raise InitbenchError(f"{where}: tune needs lr (the grid) and seeds (the tuning seeds)")
    lrs = lr_grid(value["lr"], where)
    seeds = value["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < SEED_LIMIT for s in seeds):
        raise InitbenchError(f"{where}: tune seeds must be a non-empty list of seeds (whole numbers in [0, 2^32)), "
                             f"got {value['seeds']!r}")
    if len(set(seeds)) != len(seeds):
        raise InitbenchError(f"{where}: tune seeds lists a seed twice: {seeds}")
    overlap = sorted(set(seeds) & set(comparison_seeds))
    if overlap:
        said = (f"seed {overlap[0]} is also a comparison seed" if len(overlap) == 1 else
                f"seeds {', '.join(map(str, overlap))} are also comparison seeds")
        raise InitbenchError(f"{where}: tune {said}; the tuning seeds must be disjoint from `seeds` (an lr chosen "
                             "on a seed would favour it)")
    per_init = value.get("per_init", True)
    if not (isinstance(per_init, bool) or per_init == "both"):
        raise InitbenchError(f"{where}: tune per_init must be true, false or both, got {per_init!r}")
    metric = value.get("metric", "val_acc_final")
    if metric not in METRICS:
        raise InitbenchError(f"{where}: unknown tune metric {metric!r}; valid: {', '.join(METRICS)}")
    return Tune(lrs, tuple(seeds), per_init, metric)


def score(status: str, value: float | None, num_classes: int | None) -> float:
    """A tuning run's score, as the report scores runs: its metric; a diverged run scores chance (1/classes); a
    failed run, or one without the metric, scores -inf (an lr where a run failed is chosen only if all failed)."""
    if status == "diverged":
        return 1.0 / (num_classes if _number(num_classes) and num_classes > 0 else 10)
    if status == "failed" or not _number(value):
        return -math.inf
    return float(value)


def choose(scores: Mapping[float, list[float]]) -> float:
    """The lr with the best mean score over the tuning seeds; ties (to 9 decimals) go to the smaller lr."""
    if not scores:
        raise ValueError("no learning rate to choose from")
    means = {lr: _mean(s) for lr, s in scores.items()}
    return min(means, key=lambda lr: (-means[lr], lr))


def _mean(s: list[float]) -> float:
    if not s or any(v == -math.inf for v in s):
        return -math.inf
    return round(math.fsum(s) / len(s), TIE)  # fsum: the same mean whatever order the seeds come in


def within(scores: Mapping[float, list[float]], points: float = 1.0) -> tuple[float, float, float]:
    """Tuneability on the grid: (lowest lr, highest lr, width in decades) of the contiguous run of grid lrs
    around the best whose mean score is within `points` accuracy points of the best mean."""
    lrs = sorted(scores)
    means = [_mean(scores[lr]) for lr in lrs]
    best = lrs.index(choose(scores))
    if means[best] == -math.inf:
        return math.nan, math.nan, math.nan
    ok = [m >= means[best] - points / 100 - 10**-TIE for m in means]
    low = high = best
    while low > 0 and ok[low - 1]:
        low -= 1
    while high < len(lrs) - 1 and ok[high + 1]:
        high += 1
    return lrs[low], lrs[high], math.log10(lrs[high] / lrs[low])
