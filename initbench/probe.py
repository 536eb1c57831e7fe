"""`initbench probe`: how the signal propagates through a model under each init, at step 0 and over the first
training steps, on real batches; with widths, the same across model widths (a coordinate check).

For each (width, init, seed) the model is built and initialised exactly as `initbench run` does, then trained K
steps on the run's own batches (the run's optimizer and constant lr); every step's forward and backward pass is
measured layer by layer (`initbench.train.diagnostics.measure`) before the update. Output: `probe.csv` in long form,
`signal_propagation.png`, and with widths `coord_check_<stat>.png`.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from initbench.train.diagnostics import STATS

COLUMNS = ["init", "seed", "step", "width", "model_depth", "layer", "depth", "kind", "stat", "value"]
JACOBIAN_COLUMNS = ["init", "seed", "width", "example", "index", "singular_value"]
LOG_SCALE = {"act_std", "act_rms", "grad_rms", "grad_norm"}  # positive figures that change by factors across depth


@dataclass(frozen=True)
class Probe:
    """What to probe: the grid (widths x depths x inits x seeds), the steps, and the stats kept."""

    model: str
    dataset: str
    inits: tuple[str, ...]
    seeds: int = 3
    steps: int = 0
    widths: tuple[int, ...] = ()
    stats: tuple[str, ...] = STATS
    batch_size: int = 128
    lr: float = 0.05
    jacobian: int = 0  # examples whose input-output Jacobian's singular values are taken at step 0
    depths: tuple[int, ...] = ()  # model depths (the model's depth parameter), as widths are widths


def check(probe: Probe) -> Probe:
    """Every name and number checked before any work (InitbenchError, one line); the inits in canonical form."""
    from initbench import registry
    from initbench.errors import InitbenchError

    registry.check_name("dataset", probe.dataset)  # the names before torch loads
    registry.check_model(probe.model)
    for init in probe.inits:
        registry.check_init(init)
    from initbench.inits import parse_init
    from initbench.models import with_depth, with_width

    unknown = [s for s in probe.stats if s not in STATS]
    if unknown:
        raise InitbenchError(f"unknown stat {unknown[0]!r}; valid: {', '.join(STATS)}")
    for name, value, low in (("--seeds", probe.seeds, 1), ("--steps", probe.steps, 0), ("--batch-size",
                             probe.batch_size, 1), ("--jacobian", probe.jacobian, 0),
                             *(("--widths", w, 1) for w in probe.widths),
                             *(("--depths", d, 1) for d in probe.depths)):
        if value < low:
            raise InitbenchError(f"{name} must be at least {low}, got {value}")
    if not (math.isfinite(probe.lr) and probe.lr > 0):
        raise InitbenchError(f"--lr must be above 0, got {probe.lr:g}")
    if len(set(probe.widths)) != len(probe.widths):
        raise InitbenchError(f"--widths lists a width twice: {' '.join(map(str, probe.widths))}")
    if len(set(probe.depths)) != len(probe.depths):
        raise InitbenchError(f"--depths lists a depth twice: {' '.join(map(str, probe.depths))}")
    if probe.widths:
        with_width(probe.model, probe.widths[0])  # a model without a width parameter is refused here
    if probe.depths:
        with_depth(probe.model, probe.depths[0])  # ... and one without a depth parameter
    inits = tuple(str(parse_init(i)) for i in probe.inits)
    if len(set(inits)) != len(inits):
        raise InitbenchError(f"--inits lists an init twice: {' '.join(inits)}")
    if probe.jacobian > probe.batch_size:
        raise InitbenchError(f"--jacobian {probe.jacobian}: at most the batch size ({probe.batch_size}) examples")
    return Probe(probe.model, probe.dataset, inits, probe.seeds, probe.steps, tuple(probe.widths), probe.stats,
                 probe.batch_size, probe.lr, probe.jacobian, tuple(probe.depths))


def _batches(data: Any, batch_size: int, seed: int) -> Iterator[tuple[Any, Any]]:
    """The run's training batches, epoch after epoch."""
    from initbench.data import TensorBatches

    batches = TensorBatches(data.x_train, data.y_train, batch_size, True, seed)
    while True:
        yield from batches


def run_probe(probe: Probe, data_dir: Path | None = None, download: bool = True) -> tuple[Any, Any]:
    """The long-form DataFrame of COLUMNS, one row per (width, init, seed, step, layer, stat); and, with
    `probe.jacobian`, one of JACOBIAN_COLUMNS per singular value at step 0 (else None)."""
    import pandas as pd
    import torch

    from initbench.errors import InitbenchError
    from initbench.models import with_depth, with_width
    from initbench.spec import RunSpec
    from initbench.train.diagnostics import jacobian_singular_values, measure
    from initbench.train.optim import OPTIMIZER_TABLE
    from initbench.train.prepare import prepare

    rows: list[dict[str, Any]] = []
    spectra: list[dict[str, Any]] = []
    data = None
    for width, depth, init, seed in itertools.product(probe.widths or (None,), probe.depths or (None,), probe.inits,
                                                      range(probe.seeds)):
        model = with_width(probe.model, width) if width is not None else probe.model
        model = with_depth(model, depth) if depth is not None else model
        spec = RunSpec(model=model, init=init, dataset=probe.dataset, seed=seed, batch_size=probe.batch_size,
                       lr=probe.lr, max_steps=max(1, probe.steps), accelerator="cpu")
        prepared = prepare(spec, data_dir, download, data, diagnose=False)  # step 0 is measured below
        data = prepared.data
        net = prepared.module.model
        net.train()
        opt = OPTIMIZER_TABLE[spec.optimizer](net.parameters(), spec.lr, spec.momentum, spec.weight_decay)
        torch.manual_seed(spec.seeds[1])
        for step, (x, y) in zip(range(probe.steps + 1), _batches(data, spec.batch_size, spec.seeds[1]), strict=False):
            try:
                if step == 0 and probe.jacobian:
                    for example, values in enumerate(jacobian_singular_values(net, x[: probe.jacobian])):
                        spectra += [{"init": init, "seed": seed, "width": width, "example": example, "index": i,
                                     "singular_value": v} for i, v in enumerate(values)]
                measured, _ = measure(net, x, y)
            except Exception as exc:  # the user's model: one line, not a traceback
                raise InitbenchError(f"{model} with init {init}: the forward or backward pass failed at step {step}: "
                                     f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
            rows += [{"init": init, "seed": seed, "step": step, "width": width, "model_depth": depth, **r}
                     for r in measured if r["stat"] in probe.stats]
            if step < probe.steps:
                opt.step()
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["width"] = frame["width"].astype("Int64")
    frame["model_depth"] = frame["model_depth"].astype("Int64")
    if not probe.jacobian:
        return frame, None
    jacobian = pd.DataFrame(spectra, columns=JACOBIAN_COLUMNS)
    jacobian["width"] = jacobian["width"].astype("Int64")
    return frame, jacobian


def plot_signal(frame: Any, path: Path) -> Path:
    """Step 0 (the widest model): each stat against depth, one line per init (the mean over seeds); activation
    statistics of the parameterised layers' outputs, the dead fraction of the activation modules'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at0 = frame[frame["step"] == 0]
    if at0["width"].notna().any():
        at0 = at0[at0["width"] == at0["width"].max()]
    if at0["model_depth"].notna().any():
        at0 = at0[at0["model_depth"] == at0["model_depth"].max()]
    stats = [s for s in STATS if s in set(at0["stat"])]
    cols = min(3, len(stats))
    fig, grid = plt.subplots(-(-len(stats) // cols), cols, figsize=(4.6 * cols, 3.6 * -(-len(stats) // cols)),
                             squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(stats):]:
        ax.set_axis_off()
    for ax, stat in zip(axes, stats, strict=False):
        rows = at0[at0["stat"] == stat]
        if stat != "dead_frac":  # a layer's output (its pre-activation), what the init laws speak of
            rows = rows[rows["kind"] == "layer"]
        for init, by_init in rows.groupby("init", sort=False):
            mean = by_init.groupby("depth")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker=".", label=init)
        if stat in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=stat + {"dead": " (activations)", "grad": " (layer parameters)"}.get(stat[:4], " (layer outputs)"),
               xlabel="depth (forward order)")
    axes[0].legend(fontsize=7)
    fig.suptitle("signal propagation at step 0 (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_steps(frame: Any, stat: str, path: Path) -> Path:
    """Over the training steps: `stat` of each activation module's output (the widest, deepest model), one panel per
    init, one line per layer, the mean over seeds (Glorot & Bengio's figure 2: a top sigmoid layer driven to
    saturation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[(frame["stat"] == stat) & (frame["kind"] != "layer")]
    for key in ("width", "model_depth"):
        if rows[key].notna().any():
            rows = rows[rows[key] == rows[key].max()]
    inits = list(dict.fromkeys(rows["init"]))
    fig, axes = plt.subplots(1, len(inits), figsize=(4.8 * len(inits), 3.6), squeeze=False, sharey=True)
    for ax, init in zip(axes[0], inits, strict=True):
        for layer, by_layer in rows[rows["init"] == init].groupby("layer", sort=False):
            mean = by_layer.groupby("step")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), label=str(layer))
        ax.set(title=init if len(init) < 40 else init[:37] + "...", xlabel="training step")
    axes[0][0].set_ylabel(f"{stat} of the activations")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_coord_check(frame: Any, stat: str, path: Path) -> Path:
    """The coordinate check: `stat` of every parameterised layer against width, one panel per (init, step shown),
    one line per layer (mean over seeds). Flat lines: the init's scale does not depend on width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[(frame["stat"] == stat) & (frame["kind"] == "layer")]
    steps = sorted(set(rows["step"]))
    shown = sorted({steps[round(i * (len(steps) - 1) / 3)] for i in range(4)}) if len(steps) > 4 else steps
    inits = list(dict.fromkeys(rows["init"]))
    fig, axes = plt.subplots(len(inits), len(shown), figsize=(3.6 * len(shown), 3 * len(inits)), squeeze=False)
    for (i, init), (j, step) in itertools.product(enumerate(inits), enumerate(shown)):
        ax = axes[i][j]
        cell = rows[(rows["init"] == init) & (rows["step"] == step)]
        for _, by_layer in cell.groupby("depth"):
            mean = by_layer.groupby("width")["value"].mean()
            ax.plot(mean.index.astype(float), mean.to_numpy(), marker=".", label=str(by_layer["layer"].iloc[0]))
        ax.set_xscale("log", base=2)
        if stat in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=f"{init}, step {step}", xlabel="width", ylabel=stat if j == 0 else None)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_depth_check(frame: Any, stat: str, path: Path) -> Path:
    """Across depth: at step 0, `stat` of each model's last layer (the readout) against the model's depth, one line
    per init (mean over seeds; the widest model). Flat: the init keeps the signal's scale however deep the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[(frame["stat"] == stat) & (frame["kind"] == "layer") & (frame["step"] == 0)]
    if rows["width"].notna().any():
        rows = rows[rows["width"] == rows["width"].max()]
    last = rows[rows["depth"] == rows.groupby("model_depth")["depth"].transform("max")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, by_init in last.groupby("init", sort=False):
        mean = by_init.groupby("model_depth")["value"].mean()
        ax.plot(mean.index.astype(float), mean.to_numpy(), marker="o", label=init)
    ax.set_xscale("log", base=2)
    if stat in LOG_SCALE:
        ax.set_yscale("log", base=2)
    ax.set(xlabel="model depth", ylabel=f"{stat} of the last layer", title=f"{stat} at step 0 against depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_jacobian(jacobian: Any, path: Path) -> Path:
    """The spectrum of the input-output Jacobian at step 0 (the widest model): per init, the empirical distribution
    of its singular values over examples and seeds, on a log axis (a step at 1: dynamical isometry)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if jacobian["width"].notna().any():
        jacobian = jacobian[jacobian["width"] == jacobian["width"].max()]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, rows in jacobian.groupby("init", sort=False):
        values = np.sort(rows["singular_value"].to_numpy())
        ax.step(np.maximum(values, 1e-12), np.arange(1, len(values) + 1) / len(values), where="post", label=init)
    ax.set(xscale="log", xlabel="singular value of d logits / d input", ylabel="fraction of singular values <= x",
           title="input-output Jacobian at step 0")
    ax.axvline(1, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_probe(probe: Probe, out: Path, data_dir: Path | None = None, download: bool = True,
                wandb: tuple[str, str | None] | None = None) -> dict[str, Path]:
    """Run the probe; write probe.csv (atomically, once complete) and the plots into `out`; with `wandb`
    (project, entity), log them to one W&B run."""
    frame, jacobian = run_probe(probe, data_dir, download)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "probe.csv"}
    tables = [(frame, files["csv"])]
    if jacobian is not None:
        files["jacobian_csv"] = out / "jacobian.csv"
        tables.append((jacobian, files["jacobian_csv"]))
    for table, path in tables:
        stage = path.with_name(f".{path.name}.tmp")
        table.to_csv(stage, index=False)
        stage.replace(path)  # whole or not at all
    files["signal"] = plot_signal(frame, out / "signal_propagation.png")
    if probe.depths and len(probe.depths) > 1:
        for stat in probe.stats:
            if stat in set(frame.loc[frame["kind"] == "layer", "stat"]):
                files[f"depth_{stat}"] = plot_depth_check(frame, stat, out / f"depth_check_{stat}.png")
    if probe.widths and len(probe.widths) > 1:
        for stat in probe.stats:
            if stat in set(frame.loc[frame["kind"] == "layer", "stat"]):
                files[f"coord_{stat}"] = plot_coord_check(frame, stat, out / f"coord_check_{stat}.png")
    if probe.steps:
        for stat in ("act_mean", "dead_frac"):
            if stat in set(frame.loc[frame["kind"] != "layer", "stat"]):
                files[f"steps_{stat}"] = plot_steps(frame, stat, out / f"steps_{stat}.png")
    if jacobian is not None:
        files["jacobian"] = plot_jacobian(jacobian, out / "jacobian_spectrum.png")
    if wandb:
        from initbench.dashboards import log_probe

        log_probe(frame, [p for p in files.values() if p.suffix == ".png"], out, *wandb,
                  {"model": probe.model, "dataset": probe.dataset, "inits": list(probe.inits), "seeds": probe.seeds,
                   "steps": probe.steps, "widths": list(probe.widths), "depths": list(probe.depths),
                   "batch_size": probe.batch_size,
                   "lr": probe.lr, "jacobian": probe.jacobian})
    return files


def command(args: argparse.Namespace) -> None:
    """`initbench probe`, its options parsed (declared in cli.py): checked, run, written, and said in two lines."""
    probe = check(Probe(args.model, args.dataset, tuple(args.inits), args.seeds, args.steps, tuple(args.widths),
                        tuple(args.stats), args.batch_size, args.lr, args.jacobian, tuple(args.depths)))
    wandb = None
    if args.logger == "wandb":
        from initbench.dashboards import check_settings, wandb_dir

        check_settings(args.wandb_project, wandb_dir(args.out))
        wandb = (args.wandb_project, args.wandb_entity)
    files = write_probe(probe, args.out, args.data_dir, not args.no_download, wandb)
    runs = len(probe.widths or (0,)) * len(probe.depths or (0,)) * len(probe.inits) * probe.seeds
    tables = " and ".join(str(p) for p in files.values() if p.suffix == ".csv")
    print(f"probe: {runs} models x {probe.steps + 1} steps -> {tables}\nplots: "
          f"{', '.join(str(p) for p in files.values() if p.suffix == '.png')}")
