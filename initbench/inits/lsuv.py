"""LSUV (Mishkin & Matas 2015): the data-dependent strategy, calibrated layer by layer on a batch."""

from __future__ import annotations

import contextlib
import math
from typing import Any

from torch import Tensor, nn

from initbench.errors import InitbenchError
from initbench.inits.registry import get_strategy, register_init
from initbench.inits.walk import Walk


class _Captured(Exception):
    """Stops the forward pass once the layer being calibrated has produced its output."""


@register_init("lsuv", whole_model=True)
def lsuv(model: nn.Module, data: Tensor | None, walk: Walk, tol: float = 0.1, max_iter: int = 10) -> None:
    """Mishkin & Matas 2015: orthogonal, then rescale each layer until its output variance on a batch is 1."""
    if data is None:
        raise InitbenchError("init 'lsuv' is data-dependent: it needs a batch of inputs (data=...)")
    if tol <= 0 or max_iter < 1:
        raise InitbenchError("init 'lsuv' needs tol > 0 and max_iter >= 1")
    walk.run(model, get_strategy("orthogonal"))
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    data = data.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in layers]
    model(data)
    for h in hooks:
        h.remove()
    names = {id(m): n for n, m in model.named_modules()}
    done: set[int] = set()
    for layer in order:
        if id(layer) in done:  # a layer called twice is calibrated on its first call
            continue
        done.add(id(layer))
        variance, iterations = _calibrate(model, layer, data, tol, max_iter)
        prefix = names[id(layer)]
        wname = f"{prefix}.weight" if prefix else "weight"
        rec = next(r for r in walk.manifest.records if r.name == wname)
        rec.scheme = "lsuv"
        rec.params.update(tol=tol, max_iter=max_iter, iterations=iterations, output_var=round(variance, 6))
        if abs(variance - 1.0) >= tol:
            rec.note = f"did not reach unit variance within {max_iter} iterations"
    model.train(was_training)


def _calibrate(model: nn.Module, layer: nn.Module, data: Tensor, tol: float, max_iter: int) -> tuple[float, int]:
    out: list[Tensor] = []

    def capture(m: nn.Module, inputs: Any, output: Tensor) -> None:
        out.append(output)
        raise _Captured

    hook = layer.register_forward_hook(capture)
    iterations = 0
    try:
        while True:
            out.clear()
            with contextlib.suppress(_Captured):
                model(data)
            variance = out[0].float().var().item()
            converged = abs(variance - 1.0) < tol
            if converged or iterations == max_iter or not (math.isfinite(variance) and variance > 0):
                return variance, iterations
            layer.weight.div_(math.sqrt(variance))
            iterations += 1
    finally:
        hook.remove()
