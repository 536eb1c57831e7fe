"""Step-0 diagnostics: how the signal propagates through a model at initialisation, layer by layer.

One forward and backward pass of a real batch, with hooks on the probed modules in forward order: the leaf modules
that hold parameters (their output is the layer's pre-activation) and the activation modules (their output is what
the next layer sees). Per module: the output's mean, std and rms; for activation modules the fraction of dead units
(outputs zero for every example of the batch); for parameterised modules the gradient's rms and norm over the
module's own parameters. The hooks are removed after the pass.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from initbench.errors import raise_stop

if TYPE_CHECKING:
    import torch
    from torch import nn

# This module stays light at import (the probe's command line checks its stats before torch loads).
STATS = ("act_mean", "act_std", "act_rms", "dead_frac", "grad_rms", "grad_norm")
# Per run, what the report relates to outcomes: the activation rms of the deepest parameterised layer over the
# shallowest's, the mean dead fraction over activation modules, the largest layer gradient norm over the smallest,
# the whole gradient's norm, and the loss at step 0.
SUMMARY = ("act_rms_ratio", "dead_frac", "grad_norm_spread", "grad_norm_total", "loss")


def probed(model: nn.Module) -> dict[nn.Module, tuple[str, str]]:
    """module -> (its name, kind): `layer` for a leaf module with parameters, `activation` for a module of
    torch.nn's activation family without parameters."""
    found = {}
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        own = next(module.parameters(recurse=False), None) is not None
        if own:
            found[module] = (name, "layer")
        elif type(module).__module__ == "torch.nn.modules.activation":
            found[module] = (name, "activation")
    return found


def _first_tensor(output: Any) -> torch.Tensor | None:
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """One forward (cross-entropy on `y`) and backward pass of `model` on (x, y), the model's gradients left in place
    for the caller; returns rows {layer, depth, kind, stat, value} in forward order and the loss. Statistics are
    taken as each output is made (an in-place activation after it cannot change them)."""
    import torch.nn.functional as F

    modules = probed(model)
    rows: list[dict[str, Any]] = []
    order: list[nn.Module] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        out = _first_tensor(output)
        if module in order or out is None or not out.is_floating_point():
            return  # a module called twice is measured at its first call
        order.append(module)
        name, kind = modules[module]
        flat = out.detach().double()  # a float32 output near its range still has a finite square here
        stats = {"act_mean": flat.mean(), "act_std": flat.std() if flat.numel() > 1 else flat.new_zeros(()),
                 "act_rms": flat.pow(2).mean().sqrt()}
        if kind == "activation" and flat.dim() > 1:
            stats["dead_frac"] = (flat == 0).all(dim=0).float().mean()
        rows.extend({"layer": name, "depth": len(order) - 1, "kind": kind, "stat": stat, "value": float(value)}
                    for stat, value in stats.items())

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        model.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    for module in order:
        name, kind = modules[module]
        grads = [p.grad.detach().double() for p in module.parameters(recurse=False) if p.grad is not None]
        if kind != "layer" or not grads:
            continue
        square = sum(g.pow(2).sum() for g in grads)
        count = sum(g.numel() for g in grads)
        depth = order.index(module)
        for stat, value in (("grad_rms", (square / count).sqrt()), ("grad_norm", square.sqrt())):
            rows.append({"layer": name, "depth": depth, "kind": kind, "stat": stat, "value": float(value)})
    rows.sort(key=lambda r: r["depth"])
    return rows, loss.detach()


def summarize(rows: list[dict[str, Any]], loss: float) -> dict[str, float | None]:
    """The run's step-0 summary (SUMMARY) from its rows; None where the model has nothing to measure it by."""

    def values(stat: str, kind: str) -> list[float]:
        return [r["value"] for r in rows if r["stat"] == stat and r["kind"] == kind]

    rms, dead, norms = values("act_rms", "layer"), values("dead_frac", "activation"), values("grad_norm", "layer")
    total = math.sqrt(math.fsum(n * n for n in norms)) if norms else None
    return {
        "act_rms_ratio": rms[-1] / rms[0] if len(rms) > 1 and rms[0] > 0 else None,
        "dead_frac": math.fsum(dead) / len(dead) if dead else None,
        "grad_norm_spread": max(norms) / min(norms) if norms and min(norms) > 0 else None,
        "grad_norm_total": total,
        "loss": loss,
    }


def step0(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """A run's step-0 diagnostics, measured on a copy of its model with the random state restored: training is
    exactly as without them. {"batch": n, "summary": {...}, "layers": [rows]}, or {"error": ...} when the pass fails
    (the run itself then says why)."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]):
            rows, loss = measure(copy.deepcopy(model), x, y)
    except Exception as exc:
        raise_stop(exc)
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    return {"batch": len(y), "summary": summarize(rows, float(loss)), "layers": rows}


def jacobian_singular_values(model: nn.Module, x: torch.Tensor) -> list[list[float]]:
    """Per example of `x`: the singular values of the input-output Jacobian d logits / d input (descending), on a
    copy of the model in eval mode. All near 1 is dynamical isometry (Saxe et al. 2014, Pennington et al. 2017)."""
    import torch

    net = copy.deepcopy(model).eval()
    values = []
    for example in x:
        jac = torch.autograd.functional.jacobian(lambda inp: net(inp.unsqueeze(0))[0], example.float())
        values.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1).double()).tolist())
    return values
