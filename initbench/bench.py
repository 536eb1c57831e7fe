"""`initbench bench`: training throughput through initbench vs a plain PyTorch loop, in one process.

Both sides train the same model (same init) on the same in-memory tensors with the same batches
and optimizer; initbench runs its real Trainer with CSV logging, the norm monitor and the
divergence guard on (progress bar off, validation off: the plain loop has neither).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from initbench.data import TensorBatches
from initbench.monitor import NormMonitor, Throughput
from initbench.plan import RunSpec
from initbench.runner import Prepared, _quiet_lightning, make_trainer, prepare


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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def initbench_loop(prepared: Prepared, steps: int, workdir: Path) -> float:
    """Images/s of the same training through initbench's Trainer, logging and monitors included."""
    spec = dataclasses.replace(prepared.spec, max_steps=steps, epochs=10**6)
    module = copy.deepcopy(prepared.module)
    speed = Throughput()
    callbacks = [NormMonitor(spec.log_every, module.model), speed]
    trainer = make_trainer(spec, callbacks, [CSVLogger(workdir, name="", version="")], progress=False,
                           validate=False)
    trainer.fit(module, datamodule=prepared.data)
    return speed.images_per_s or 0.0


# Enough steps per measurement that a pass takes seconds, not milliseconds: short passes on a shared
# 2-core machine swing by +-30%.
DEFAULT_STEPS = {"mlp": 1000, "simplecnn": 150}


def bench(models: list[str], dataset: str, steps: int | None, repeats: int, batch_size: int, accelerator: str,
          data_dir: Path | None = None) -> list[dict[str, Any]]:
    _quiet_lightning()
    rows = []
    for model in models:
        n_steps = steps or DEFAULT_STEPS.get(model, 300)
        spec = RunSpec(model=model, dataset=dataset, batch_size=batch_size, accelerator=accelerator)
        prepared = prepare(spec, data_dir)
        device = torch.device("cuda" if accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()) else "cpu")
        plain, ours = [], []
        with tempfile.TemporaryDirectory() as tmp:
            plain_loop(prepared, 20, device)  # warm-up: allocator, kernels, caches
            for i in range(repeats):  # interleaved, so drift in machine load hits both sides alike
                plain.append(plain_loop(prepared, n_steps, device))
                ours.append(initbench_loop(prepared, n_steps, Path(tmp) / str(i)))
        ratios = sorted(o / p for o, p in zip(ours, plain, strict=True))  # paired: same moment, same load
        rows.append({"model": model, "steps": n_steps, "plain_img_s": statistics.median(plain),
                     "initbench_img_s": statistics.median(ours),
                     "ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
                     "device": str(device), "params": sum(q.numel() for q in prepared.module.model.parameters())})
    return rows


def format_rows(rows: list[dict[str, Any]], dataset: str, repeats: int, batch_size: int, log_every: int) -> str:
    lines = [f"dataset {dataset}, batch {batch_size}, {repeats} interleaved repeats (medians), "
             f"torch threads {torch.get_num_threads()}, norms logged every {log_every} steps",
             f"{'model':<12}{'device':<8}{'steps':>7}{'plain loop img/s':>18}{'initbench img/s':>18}{'ratio':>8}"
             "  ratio range"]
    for r in rows:
        lines.append(f"{r['model']:<12}{r['device']:<8}{r['steps']:>7}{r['plain_img_s']:>18,.0f}"
                     f"{r['initbench_img_s']:>18,.0f}{r['ratio']:>8.3f}  {r['ratio_min']:.3f}-{r['ratio_max']:.3f}")
    return "\n".join(lines)
