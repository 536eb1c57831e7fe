"""Gains: which activation a model uses, and the gain a variance-preserving init gives it.

For the activations `torch.nn.init.calculate_gain` knows, the gain is PyTorch's, except SELU: the
SNN paper and PyTorch's own docs initialise SELU networks with variance 1/fan_in, i.e. gain 1, not
`calculate_gain("selu") = 3/4`. For activations PyTorch has no gain for (GELU, SiLU, ELU, Mish,
Softplus, Hardswish) the gain is He et al.'s rule, 1/sqrt(E[f(z)^2]) for z ~ N(0, 1), which gives
exactly sqrt(2) for ReLU; it is computed by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init as tinit

from initbench.params import NONLINEARITIES

TORCH_GAINS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
               "sigmoid", "tanh", "relu", "leaky_relu", "selu")
_SECOND_MOMENT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "silu": F.silu, "elu": F.elu, "mish": F.mish, "softplus": F.softplus, "hardswish": F.hardswish,
}

_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
    nn.SELU: "selu", nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu", nn.CELU: "elu", nn.Mish: "mish",
    nn.Softplus: "softplus", nn.Hardswish: "hardswish", nn.PReLU: "leaky_relu",
}
_FUNCTIONS: dict[Callable, str] = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu", F.leaky_relu: "leaky_relu", F.gelu: "gelu",
    F.silu: "silu", F.elu: "elu", F.celu: "elu", F.mish: "mish", F.softplus: "softplus", F.hardswish: "hardswish",
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.selu: "selu",
    torch.selu: "selu",
}


def _second_moment_gain(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)  # exact for polynomials up to degree 239
    values = fn(torch.from_numpy(nodes)).numpy()
    return 1.0 / math.sqrt(float(np.sum(weights * values**2) / math.sqrt(2 * math.pi)))


_GAINS = {name: _second_moment_gain(fn) for name, fn in _SECOND_MOMENT.items()}


def gain(nonlinearity: str, negative_slope: float = 0.01) -> float:
    """The gain for `nonlinearity`: PyTorch's where it has one (SELU excepted: 1), else 1/sqrt(E[f(z)^2])."""
    if nonlinearity == "selu":
        return 1.0
    if nonlinearity in _GAINS:
        return _GAINS[nonlinearity]
    return tinit.calculate_gain(nonlinearity, negative_slope)


def gain_note(nonlinearity: str) -> str:
    """Why a nonlinearity's gain differs from (or is missing in) torch.nn.init.calculate_gain, if it does."""
    if nonlinearity == "selu":
        return "selu: gain 1 (variance 1/fan_in, as the SNN paper and PyTorch's docs advise), not calculate_gain's 0.75"
    if nonlinearity in _GAINS:
        return f"{nonlinearity}: gain {_GAINS[nonlinearity]:.4f} = 1/sqrt(E[{nonlinearity}(z)^2]), z ~ N(0, 1)"
    return ""


def _activation_name(obj: object) -> tuple[str, float] | None:
    """(name, negative slope) of an activation given as a module, a function or a name."""
    if isinstance(obj, nn.Module):
        name = _MODULES.get(type(obj))
        slope = getattr(obj, "negative_slope", None)
        if isinstance(obj, nn.PReLU):
            slope = obj.weight.detach().float().mean().item() if obj.weight.device.type != "meta" else 0.25
        return (name, float(0.0 if slope is None else slope)) if name else None
    if isinstance(obj, str):
        name = obj.lower()
        return (name, 0.01 if name == "leaky_relu" else 0.0) if name in NONLINEARITIES else None
    if callable(obj):
        try:
            name = _FUNCTIONS.get(obj)
        except TypeError:  # unhashable callable
            return None
        return (name, 0.01 if name == "leaky_relu" else 0.0) if name else None
    return None


def infer_nonlinearity(model: nn.Module) -> tuple[str | None, float, str]:
    """The activation the gains are derived from, with how it was found.

    `model.nonlinearity` (a name) wins; otherwise the one activation the model uses, found among
    its modules and their `activation` attributes (modules, functions such as F.gelu, or names,
    as in `TransformerEncoderLayer(activation="gelu")`).
    """
    declared = getattr(model, "nonlinearity", None)
    if isinstance(declared, str) and declared in NONLINEARITIES:
        return declared, float(getattr(model, "negative_slope", 0.01)), f"{declared} (declared by the model)"
    found: dict[str, tuple[float, str]] = {}
    for mname, m in model.named_modules():
        hit = _activation_name(m)
        if hit:
            found.setdefault(hit[0], (hit[1], f"nn.{type(m).__name__}"))
        attr = getattr(m, "activation", None)
        if attr is not None and not isinstance(attr, nn.Module):  # modules are found by the walk itself
            hit = _activation_name(attr)
            if hit:
                where = f"{mname or 'model'}.activation = {getattr(attr, '__name__', attr)}"
                found.setdefault(hit[0], (hit[1], where))
    if len(found) == 1:
        (name, (slope, where)), = found.items()
        return name, slope, f"{name} (inferred from {where})"
    why = f"mixed activations {sorted(found)}" if found else "no activation found"
    return None, 0.0, f"unknown ({why})"
