"""A study's per-layer figures: each run's gradient norms and update ratios (grad_norm/<layer>, update_ratio/<layer> in
its metrics.csv) in long form, the layers in the model's order as its init manifest lists them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initbench.record import MANIFEST, RunRecord


def layer_order(run_dir: Path) -> tuple[list[str], str | None]:
    """Parameter names in model order, from the run's init manifest, and what is wrong with the manifest (None: it
    is whole, or the record has none)."""
    try:
        manifest = RunRecord(run_dir).manifest()
    except OSError:
        return [], None
    except ValueError as exc:
        return [], f"unreadable {MANIFEST} ({type(exc).__name__}): its layers are shown in file order"
    records = manifest.get("records") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict):
        return [], f"{MANIFEST} is not a mapping: its layers are shown in file order"
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                for r in records):
        return [], f"{MANIFEST} has no list of named parameters: its layers are shown in file order"
    return [r["name"] for r in records], None


def layer_metrics(parts: list[tuple[str, pd.DataFrame, list[str]]]) -> pd.DataFrame:
    """Every run's grad_norm/<layer> and update_ratio/<layer> columns -> one long frame, run after run in the order
    given, each run's layers in model order. The runs that share their columns and layer order are melted in one
    pass (one pass per run cost the report seconds on a study of hundreds of runs)."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[int, str, pd.DataFrame]]] = {}
    for pos, (run_id, metrics, order) in enumerate(parts):
        cols = tuple(c for c in metrics.columns if c.startswith(("grad_norm/", "update_ratio/")))
        if cols:
            groups.setdefault((cols, tuple(order)), []).append((pos, run_id, metrics[["step", *cols]]))
    frames = []
    for (cols, order), runs in groups.items():
        sizes = [len(m) for _, _, m in runs]
        ids = pd.DataFrame({"pos": np.repeat([pos for pos, _, _ in runs], sizes),
                            "run_id": np.repeat([run_id for _, run_id, _ in runs], sizes)})
        wide = pd.concat([ids, pd.concat([m for _, _, m in runs], ignore_index=True)], axis=1)
        stats = []
        for stat in ("grad_norm", "update_ratio"):
            named = [c for c in cols if c.startswith(stat + "/")]
            if not named:
                continue
            long = wide[["pos", "run_id", "step", *named]].dropna(subset=named, how="all").melt(
                id_vars=["pos", "run_id", "step"], var_name="layer", value_name=stat)
            long["layer"] = long["layer"].str.slice(len(stat) + 1)
            stats.append(long.set_index(["pos", "run_id", "step", "layer"]))
        df = pd.concat(stats, axis=1).reset_index()
        known = [*order, "total"]
        df["order"] = df["layer"].map({name: i for i, name in enumerate(known)})
        frames.append(df.dropna(subset=["order"]) if order else df.assign(order=0))
    columns = ["run_id", "step", "layer", "grad_norm", "update_ratio"]  # a missing stat: NaN
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True).sort_values(["pos", "order", "step"], kind="stable")
    return df.reindex(columns=columns).reset_index(drop=True)
