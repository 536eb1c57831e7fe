"""`initbench bench`: training throughput through initbench vs a plain PyTorch loop, in one process.

Both sides train the same model (same init) on the same in-memory tensors with the same batches
and optimizer; initbench runs its real Trainer with CSV logging, the norm monitor and the
divergence guard on (progress bar off, validation off: the plain loop has neither).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from initbench.data import TensorBatches
from initbench.errors import InitbenchError
from initbench.record import RunRecord
from initbench.spec import LOG_POINTS_PER_EPOCH, RunSpec
from initbench.train.monitor import Throughput
from initbench.train.prepare import Prepared, prepare
from initbench.train.trainer import make_trainer, quiet_lightning


def plain_loop(prepared: Prepared, steps: int, device: torch.device) -> float:
    """Images/s of the textbook loop: zero_grad, forward, cross-entropy, backward, step."""
    spec = prepared.spec
    model = copy.deepcopy(prepared.module.model).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    batches = TensorBatches(prepared.data.x_train, prepared.data.y_train, spec.batch_size, True, spec.seeds[1])
    seen = done = 0
    start = time.perf_counter()
    while done < steps:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
            done += 1
            if done == steps:
                break
    _sync(device)
    return seen / (time.perf_counter() - start)


def initbench_loop(prepared: Prepared, steps: int, workdir: Path) -> float:
    """Images/s of the same training through initbench's Trainer, logging and monitors included."""
    spec = dataclasses.replace(prepared.spec, max_steps=steps, epochs=10**6)
    module = copy.deepcopy(prepared.module)
    speed = Throughput()
    trainer = make_trainer(spec, [speed], [RunRecord(workdir).metrics_logger()], progress=False,
                           validate=False)
    trainer.fit(module, datamodule=prepared.data)
    return speed.images_per_s or 0.0


def abba(a: Callable[[str], float], b: Callable[[str], float], repeats: int) -> list[tuple[list[float], list[float]]]:
    """`repeats` interleaved repeats of a, b, b, a (each call given a tag of its own), so that a drift in the
    machine's load hits both sides alike within a repeat: per repeat ([a, a], [b, b])."""
    out = []
    for i in range(repeats):
        first, bs = a(f"{i}a1"), [b(f"{i}b1"), b(f"{i}b2")]
        out.append(([first, a(f"{i}a2")], bs))
    return out


def pooled(pairs: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float], list[float]]:
    """(every a, every b, the sorted per-repeat ratios sum(b) / sum(a): paired, same moments, same load)."""
    return ([v for a, _ in pairs for v in a], [v for _, b in pairs for v in b],
            sorted(sum(b) / sum(a) for a, b in pairs))


# Enough steps per measurement that a pass takes seconds, not milliseconds: short passes on a shared
# 2-core machine swing by +-30%.
DEFAULT_STEPS = {"mlp": 1000, "simplecnn": 150}


def bench(models: list[str], dataset: str, steps: int | None, repeats: int, batch_size: int, accelerator: str,
          data_dir: Path | None = None) -> list[dict[str, Any]]:
    quiet_lightning()
    return [_bench_model(model, dataset, steps or DEFAULT_STEPS.get(model, 300), repeats, batch_size, accelerator,
                         data_dir) for model in models]


def _bench_device(accelerator: str) -> torch.device:
    """The device a bench measurement trains on: CUDA when asked for (gpu, cuda) or when `auto` finds it."""
    return torch.device("cuda" if accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()) else "cpu")


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (a timer read on the host then measures the work, not its queueing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench_model(model: str, dataset: str, n_steps: int, repeats: int, batch_size: int, accelerator: str,
                 data_dir: Path | None) -> dict[str, Any]:
    spec = RunSpec(model=model, dataset=dataset, batch_size=batch_size, accelerator=accelerator)
    prepared = prepare(spec, data_dir, diagnose=False)  # no record is written
    device = _bench_device(accelerator)
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(prepared, 20, device)  # warm-up: allocator, kernels, caches
        plain, ours, ratios = pooled(abba(lambda tag: plain_loop(prepared, n_steps, device),
                                          lambda tag: initbench_loop(prepared, n_steps, Path(tmp) / tag), repeats))
    return {"model": model, "steps": n_steps, "plain_img_s": statistics.median(plain),
            "initbench_img_s": statistics.median(ours),
            "ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "device": str(device), "params": sum(q.numel() for q in prepared.module.model.parameters())}


def run_seconds(spec: RunSpec, out: Path, data_dir: Path | None = None) -> tuple[float, dict[str, Any]]:
    """(wall seconds, summary) of one whole run as `initbench run` trains it (set-up, step-0 diagnostics, validation,
    training, test pass, record written), into a folder of its own; a run that did not train to its end (it failed
    or diverged) is an error: its time is not a run's."""
    from initbench.execute.units import claim_and_run

    start = time.perf_counter()
    _, summary, outcome = claim_and_run(spec, out, progress=False, data_dir=data_dir, download=False)
    seconds = time.perf_counter() - start
    if outcome != "trained" or summary.get("status") not in ("ok", "collapsed"):
        raise InitbenchError(f"{spec.model} on {spec.dataset} did not train to its end "
                             f"({summary.get('status', outcome)}): no fixed cost to measure")
    return seconds, summary


FIXED_EPOCHS = (2, 6)  # the short and the long run of the fixed-cost measurement


def fixed_cost(model: str, dataset: str, repeats: int, batch_size: int, accelerator: str = "auto",
               data_dir: Path | None = None) -> dict[str, Any]:
    """What a run costs beyond its epochs: whole runs of FIXED_EPOCHS[0] and FIXED_EPOCHS[1] epochs (otherwise the
    same spec) timed interleaved; the line through them gives the cost of an epoch (its slope: training steps,
    logging, validation) and of a run of no epochs (its intercept: everything else, once per run)."""
    quiet_lightning()
    short, long = (RunSpec(model=model, dataset=dataset, batch_size=batch_size, epochs=e, accelerator=accelerator)
                   for e in FIXED_EPOCHS)
    with tempfile.TemporaryDirectory() as tmp:
        _, warm = run_seconds(short, Path(tmp) / "warm", data_dir)  # imports, data cache, kernels
        pairs = abba(lambda tag: run_seconds(short, Path(tmp) / tag, data_dir)[0],
                     lambda tag: run_seconds(long, Path(tmp) / tag, data_dir)[0], repeats)
    span = FIXED_EPOCHS[1] - FIXED_EPOCHS[0]
    epoch = sorted((sum(b) - sum(a)) / 2 / span for a, b in pairs)
    fixed = sorted(sum(a) / 2 - FIXED_EPOCHS[0] * (sum(b) - sum(a)) / 2 / span for a, b in pairs)
    return {"model": model, "fixed_s": statistics.median(fixed), "fixed_min": fixed[0], "fixed_max": fixed[-1],
            "epoch_s": statistics.median(epoch), "steps_per_epoch": warm["steps"] // FIXED_EPOCHS[0]}


def format_fixed(rows: list[dict[str, Any]], dataset: str, repeats: int, batch_size: int) -> str:
    width = max(12, *(len(r["model"]) + 2 for r in rows))
    short, long = FIXED_EPOCHS
    lines = [f"per-run fixed cost: whole runs on {dataset} (batch {batch_size}) of {short} and {long} epochs, "
             f"{repeats} interleaved repeats ({short}, {long}, {long}, {short}; medians), torch threads "
             f"{torch.get_num_threads()}; fixed = set-up, step-0 validation and diagnostics, test pass, record",
             f"{'model':<{width}}{'fixed s/run':>12}{'range':>16}{'s/epoch':>9}{'steps/epoch':>13}"
             f"{'fixed, in epochs':>18}"]
    noisy = []
    for r in rows:
        spread = f"{r['fixed_min']:.3f}..{r['fixed_max']:.3f}"
        in_epochs = f"{r['fixed_s'] / r['epoch_s']:.1f}" if r["epoch_s"] > 0 else "-"
        lines.append(f"{r['model']:<{width}}{r['fixed_s']:>12.3f}{spread:>16}"
                     f"{r['epoch_s']:>9.3f}{r['steps_per_epoch']:>13}{in_epochs:>18}")
        if r["fixed_min"] < 0 or r["epoch_s"] <= 0:
            noisy.append(r["model"])
    if noisy:
        lines.append(f"note: for {', '.join(noisy)} the machine's noise is as large as the fixed cost (a repeat's "
                     "line crossed zero): give more --repeats")
    return "\n".join(lines)


def format_rows(rows: list[dict[str, Any]], dataset: str, repeats: int, batch_size: int) -> str:
    width = max(12, *(len(r["model"]) + 2 for r in rows))
    lines = [f"dataset {dataset}, batch {batch_size}, {repeats} interleaved repeats (plain, initbench, initbench, "
             "plain; medians), "
             f"torch threads {torch.get_num_threads()}, curves and norms logged {LOG_POINTS_PER_EPOCH} times an epoch",
             f"{'model':<{width}}{'device':<8}{'steps':>7}{'plain loop img/s':>18}{'initbench img/s':>18}{'ratio':>8}"
             "  ratio range"]
    for r in rows:
        lines.append(f"{r['model']:<{width}}{r['device']:<8}{r['steps']:>7}{r['plain_img_s']:>18,.0f}"
                     f"{r['initbench_img_s']:>18,.0f}{r['ratio']:>8.3f}  {r['ratio_min']:.3f}-{r['ratio_max']:.3f}")
    return "\n".join(lines)


LOCKSTEP_INITS = ("kaiming_normal", "xavier_uniform", "orthogonal", "lecun_normal", "kaiming_uniform",
                  "xavier_normal", "pytorch_default", "trunc_normal(std=0.02)")


def lockstep_loop(members: list[Prepared], steps: int, workdir: Path) -> tuple[float, str]:
    """(seconds, mode) for `steps` steps of the members trained as one lockstep group (CSV logs and norms
    included)."""
    from initbench.train.lockstep import StackedClassifier

    spec = dataclasses.replace(members[0].spec, max_steps=steps, epochs=10**6)
    loggers = [RunRecord(workdir / str(m)).metrics_logger() for m in range(len(members))]

    def log(member: int, metrics: dict[str, float], step: int, epoch: int | None) -> None:
        loggers[member].log_metrics(metrics, step=step)

    module = StackedClassifier([copy.deepcopy(p.module.model) for p in members], members[0].data.num_classes, spec,
                               log)
    speed = Throughput()
    trainer = make_trainer(spec, [speed], [], progress=False, validate=False)
    data = members[0].data
    module.to(trainer.strategy.root_device)
    module.choose_mode(*(t[: spec.batch_size].to(trainer.strategy.root_device) for t in (data.x_train, data.y_train)))
    trainer.fit(module, datamodule=data)
    for logger in loggers:
        logger.finalize("success")
    return speed.seconds, module.mode


def _unlogged_group(members: list[Prepared], device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(the members stacked as one lockstep module that logs nothing, on `device`; its first training batch)."""
    from initbench.train.lockstep import StackedClassifier

    spec, data = members[0].spec, members[0].data
    module = StackedClassifier([copy.deepcopy(p.module.model) for p in members], data.num_classes, spec,
                               lambda *a: None).to(device)
    return module, *(t[: spec.batch_size].to(device) for t in (data.x_train, data.y_train))


def _lockstep_members(model: str, dataset: str, k: int, batch_size: int, accelerator: str,
                     data_dir: Path | None = None) -> list[Prepared]:
    """K runs of `model` prepared to train together, their inits drawn in turn from LOCKSTEP_INITS."""
    return [prepare(RunSpec(model=model, dataset=dataset, init=LOCKSTEP_INITS[i % len(LOCKSTEP_INITS)], init_seed=i,
                            batch_size=batch_size, accelerator=accelerator), data_dir, diagnose=False)
            for i in range(k)]


def group_flops(members: list[Prepared], device: torch.device) -> int:
    """FLOPs of one group step's forward and backward pass, as torch's FlopCounterMode counts them member by member
    (matrix products and convolutions: the work no engine can skip). Counted in the member loop whatever mode the
    group trains in: vmap turns convolutions into grouped ones, which the counter overstates (2 SimpleCNNs on digits:
    0.69 GFLOP a step counted under vmap against 0.54 for the same arithmetic member by member)."""
    from torch.utils.flop_counter import FlopCounterMode

    module, x, y = _unlogged_group(members, device)
    module.mode = "loop"
    with FlopCounterMode(display=False) as counter:
        module._member_losses(module.logits(x), y).sum().backward()
    return counter.get_total_flops()


@functools.cache
def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of this device's best float32 n x n matrix product, measured now (the best of `repeats`; once per
    process and device: the groups of one command share the figure)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best


def bench_lockstep(model: str, dataset: str, k: int, steps: int, repeats: int, batch_size: int, accelerator: str,
                   data_dir: Path | None = None, peak_size: int = 2048) -> dict[str, Any]:
    """K runs of one model (different inits) trained in lockstep and the same K one after another through
    initbench, interleaved; the speedup is the ratio of their wall times for the same steps (the device's matmul
    peak, which bounds it, measured on peak_size x peak_size products)."""
    quiet_lightning()
    members = _lockstep_members(model, dataset, k, batch_size, accelerator, data_dir)
    cuda = members[0].data.x_train.is_cuda or (accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available())
    peak, mode = None, "?"

    def one_by_one(tag: str) -> float:
        return sum(steps * batch_size / initbench_loop(p, steps, Path(tmp) / f"s{tag}-{m}")
                   for m, p in enumerate(members))

    def in_lockstep(tag: str) -> float:
        nonlocal mode
        seconds, mode = lockstep_loop(members, steps, Path(tmp) / f"l{tag}")
        return seconds

    with tempfile.TemporaryDirectory() as tmp:
        lockstep_loop(members, 10, Path(tmp) / "warm")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        together, alone, ratios = pooled(abba(in_lockstep, one_by_one, repeats))
        if cuda:
            peak = torch.cuda.max_memory_allocated()
    device = torch.device("cuda" if cuda else "cpu")
    flops = group_flops(members, device)
    return {"model": model, "k": k, "steps": steps, "lockstep_s": statistics.median(together),
            "sequential_s": statistics.median(alone), "speedup": statistics.median(ratios),
            "speedup_min": ratios[0], "speedup_max": ratios[-1], "peak_mib": None if peak is None else peak / 2**20,
            "device": device.type, "mode": mode, "step_flops": flops, "matmul_peak": matmul_peak(device, peak_size),
            "peak_size": peak_size}


def compile_gain(model: str, dataset: str, k: int, steps: int, repeats: int, batch_size: int, accelerator: str,
                 backend: str = "inductor", data_dir: Path | None = None) -> dict[str, Any]:
    """A lockstep group's forward and backward pass (the arithmetic a compiler could fuse; the optimizer step is the
    same either way) eager and through `torch.compile(backend=...)`, `steps` passes each, interleaved after both are
    warm (the compile itself not counted): whether compiling the group's step would pay on this device."""
    device = _bench_device(accelerator)
    module, x, y = _unlogged_group(_lockstep_members(model, dataset, k, batch_size, accelerator, data_dir), device)
    mode = module.choose_mode(x, y)
    compiled = torch.compile(module.logits, backend=backend)

    def passes(logits: Callable[[torch.Tensor], torch.Tensor], n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            module._member_losses(logits(x), y).sum().backward()
        _sync(device)
        return time.perf_counter() - start

    start = time.perf_counter()
    passes(compiled, 3)
    compile_s = time.perf_counter() - start
    passes(module.logits, 3)
    eager, fused, ratios = pooled(abba(lambda tag: passes(module.logits, steps), lambda tag: passes(compiled, steps),
                                       repeats))
    return {"model": model, "k": k, "steps": steps, "mode": mode, "backend": backend, "device": device.type,
            "eager_s": statistics.median(eager), "compiled_s": statistics.median(fused),
            "gain": 1 / statistics.median(ratios), "compile_s": compile_s}


def format_lockstep(row: dict[str, Any], dataset: str, repeats: int, batch_size: int) -> str:
    import resource

    peak = (f"peak GPU memory of the group {row['peak_mib']:,.0f} MiB" if row["peak_mib"] is not None else
            f"process peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB (RSS)")
    return (f"{row['model']} x{row['k']} on {dataset} ({row['device']}, batch {batch_size}, {row['steps']} steps, "
            f"{repeats} interleaved repeats (lockstep, one by one twice, lockstep), "
            f"torch threads {torch.get_num_threads()}): lockstep ({row['mode']}) "
            f"{row['lockstep_s']:.2f} s, sequential {row['sequential_s']:.2f} s\n"
            f"lockstep speedup {row['speedup']:.2f}x (range {row['speedup_min']:.2f}-{row['speedup_max']:.2f}); "
            f"{peak}\n{roofline(row)}")


def roofline(row: dict[str, Any]) -> str:
    """What the device allows: the group's matrix products at the device's float32 matmul peak take a time no
    engine can beat, so the sequential runs' time over it bounds any lockstep speedup."""
    work = row["step_flops"] * row["steps"]
    floor = work / row["matmul_peak"]
    return (f"the group's matrix products: {row['step_flops'] / 1e9:.2f} GFLOP a step, run at "
            f"{work / row['lockstep_s'] / 1e9:.0f} GFLOP/s; this {row['device']}'s float32 matmul peak "
            f"{row['matmul_peak'] / 1e9:.0f} GFLOP/s ({row['peak_size']}x{row['peak_size']}, measured now), at "
            f"which they would take {floor:.2f} s: no lockstep engine could be more than "
            f"{row['sequential_s'] / floor:.2f}x faster than these sequential runs")
