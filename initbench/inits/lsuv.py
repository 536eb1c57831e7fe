"""LSUV (Mishkin & Matas 2015): the data-dependent strategy, calibrated layer by layer on a batch.

Every weight is first made orthogonal; then each layer whose output LSUV can rescale -- Linear and
convolution layers, and the output projection of MultiheadAttention -- is divided by the square
root of its output variance until that variance is 1. By default in training mode, so that Dropout
and BatchNorm act as on the first training step (BatchNorm's running statistics are restored
afterwards); `mode=eval` calibrates as the model predicts. Weights it cannot calibrate stay
orthogonal and say so in the manifest.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from initbench.errors import InitbenchError, raise_stop
from initbench.inits.registry import get_strategy, register_init
from initbench.inits.roles import iter_params
from initbench.inits.walk import Walk
from initbench.params import AtLeast, rules

_CALIBRATED = (nn.Linear, nn.modules.conv._ConvNd)


class _Captured(Exception):
    """Stops the forward pass once the layer being calibrated has produced its output."""


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _targets(model: nn.Module, owners: dict[int, str]) -> dict[int, tuple[nn.Module, str, Tensor]]:
    """Layers LSUV can rescale: id -> (module whose output is read, weight's name in the manifest, weight).

    A weight shared by several layers (tied embeddings) is calibrated once, at the first layer that uses it.
    """
    inside_attention = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    out = {}
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):  # F.multi_head_attention_forward never calls out_proj itself
            out[id(m)] = (m, owners[id(m.out_proj.weight)], m.out_proj.weight)
        elif isinstance(m, _CALIBRATED) and id(m) not in inside_attention:
            out[id(m)] = (m, owners[id(m.weight)], m.weight)
    return out


@register_init("lsuv", whole_model=True, choices={"mode": ("train", "eval")},
               check=rules(AtLeast("tol", 0, strict=True), AtLeast("max_iter", 1)))
def lsuv(model: nn.Module, data: Tensor | None, walk: Walk, tol: float = 0.1, max_iter: int = 10,
         mode: str = "train") -> None:
    """Mishkin & Matas 2015: orthogonal, then rescale each layer until its output variance on a batch is 1."""
    if data is None:
        raise InitbenchError("init 'lsuv' is data-dependent: it needs a batch of inputs (data=...)")
    first = next(model.parameters(), None)
    if first is None:
        raise InitbenchError("init 'lsuv': the model has no parameters")
    walk.run(model, get_strategy("orthogonal"))
    owners = {id(p.tensor): p.name for p in iter_params(model)}
    targets = {k: v for k, v in _targets(model, owners).items() if v[1] not in walk.ruled}
    data = data.to(first.device)
    modes = {m: m.training for m in model.modules()}  # restored one by one: frozen submodules stay frozen
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # BatchNorm's running statistics
    try:  # whatever happens, the model leaves with its own modes and BatchNorm statistics
        model.train(mode == "train")
        _calibrate_all(model, walk, targets, data, tol, max_iter, mode)
    finally:
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        for m, training in modes.items():
            m.training = training


def _calibrate_all(model: nn.Module, walk: Walk, targets: dict[int, tuple[nn.Module, str, Tensor]], data: Tensor,
                   tol: float, max_iter: int, mode: str) -> None:
    """Calibrate the targets in the order the forward pass reaches them; the manifest says which were not."""
    order: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(id(m))) for m, _, _ in targets.values()]
    try:
        model(data)
    except Exception as exc:
        raise_stop(exc)
        raise InitbenchError(f"init 'lsuv': the model's forward pass failed on a batch of shape "
                             f"{tuple(data.shape)}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    finally:
        for h in hooks:
            h.remove()
    calibrated: set[str] = set()
    for key in dict.fromkeys(order):  # a layer called twice is calibrated on its first call
        module, wname, weight = targets[key]
        if wname in calibrated:  # a tied weight, already calibrated where it was first used
            continue
        variance, iterations = _calibrate(model, module, weight, data, tol, max_iter)
        calibrated.add(wname)
        rec = next(r for r in walk.manifest.records if r.name == wname)
        rec.scheme = "lsuv"
        rec.params.update(tol=tol, max_iter=max_iter, mode=mode, iterations=iterations, output_var=round(variance, 6))
        rec.distribution = None
        if abs(variance - 1.0) >= tol:
            rec.note = "; ".join(filter(None, (rec.note, f"did not reach unit variance within {max_iter} iterations")))
    with_output = {wname for _, wname, _ in targets.values()}
    skipped = []
    for rec in walk.manifest.records:
        if rec.role == "weight" and rec.name not in calibrated and rec.name not in walk.ruled:
            why = "no output seen" if rec.name in with_output else "LSUV rescales Linear, conv and attention outputs"
            rec.note = "; ".join(filter(None, (rec.note, f"not calibrated: {why}")))
            skipped.append(rec.name)
    if skipped:
        walk.manifest.warn(f"lsuv left {len(skipped)} weight(s) orthogonal, not calibrated: {', '.join(skipped)}")


def _calibrate(model: nn.Module, layer: nn.Module, weight: Tensor, data: Tensor, tol: float,
               max_iter: int) -> tuple[float, int]:
    out: list[Tensor] = []

    def capture(m: nn.Module, inputs: Any, output: Any) -> None:
        out.append(_first(output))
        raise _Captured

    hook: Callable[[], None] = layer.register_forward_hook(capture).remove
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
            weight.div_(math.sqrt(variance))
            iterations += 1
    finally:
        hook()
