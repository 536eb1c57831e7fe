"""Models by name, built for a dataset's input shape: the registry (built-ins, the `initbench.models` entry points, and
`package.module:build` references), a spec's parameters checked, the model built, and its forward cost."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from initbench.errors import InitbenchError
from initbench.registry import Registry, check_model_params
from initbench.syntax import format_call, parse_call

MODELS = Registry("model")  # name -> a class or function built as (input_shape, num_classes, **params)


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a model class built as `cls(input_shape, num_classes, **params)`."""
    return MODELS.register(name)


def list_models() -> dict[str, Callable[..., nn.Module]]:
    """Built-in models and those installed under the `initbench.models` entry-point group."""
    return MODELS.all()


def _get(name: str) -> Callable[..., nn.Module]:
    fn, _ = MODELS.find(name)
    if not callable(fn):
        raise InitbenchError(f"model '{name}' is not callable: it must be a function or class taking "
                             f"(input_shape, num_classes) and returning a torch.nn.Module")
    return fn


def model_params(name: str) -> dict[str, Any] | None:
    """A model's parameters with their defaults (input_shape and num_classes come from the data);
    None when it takes any keyword (**kwargs)."""
    fn = _get(name)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise InitbenchError(f"model '{name}' must take (input_shape, num_classes); its signature is "
                             f"{inspect.signature(fn)}")
    extra = [p for p in positional[2:] if p.kind is p.POSITIONAL_OR_KEYWORD]
    return {p.name: p.default for p in [*extra, *(p for p in params if p.kind is p.KEYWORD_ONLY)]}


def check_model(spec: str | Mapping[str, Any] | tuple[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Resolve a model spec's name (built-in, entry point or import path) and check its parameters."""
    name, params = parse_call(spec, "model")
    check_model_params(name, params, model_params(name))
    return name, params


def build_model(spec: str | Mapping[str, Any] | tuple[str, Mapping[str, Any]], input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    """Build `simplecnn`, `mlp(hidden=[512, 256], activation=tanh)`, `mypkg.models:build`, ... (or a spec's parsed
    `model_call`) for inputs of `input_shape` (C, H, W) and `num_classes` outputs."""
    name, params = check_model(spec)
    try:
        model = _get(name)(tuple(input_shape), num_classes, **params)
    except InitbenchError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InitbenchError(f"model '{name}' failed to build for input shape {tuple(input_shape)} and "
                             f"{num_classes} classes: {type(exc).__name__}: {reason}") from None
    if not isinstance(model, nn.Module):
        raise InitbenchError(f"model '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def forward_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of `example` (a batch of one) through the model's Linear and
    convolution layers; the parameter count when the forward pass fails or finds none (a rough cost, for progress)."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd) and isinstance(output, torch.Tensor):
            total += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    handles = [m.register_forward_hook(count) for m in model.modules()]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    except Exception:
        total = 0
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return total or sum(p.numel() for p in model.parameters())


def with_width(spec: str | Mapping[str, Any], width: int) -> str:
    """The model spec at `width`, for a coordinate check: the MLP's hidden layers all `width` wide, the SimpleCNN's
    channels scaled so the first block has `width` (the others keep their ratio to it), a user model's `width`
    parameter set. A model without a width parameter is refused."""
    name, params = check_model(spec)
    valid = model_params(name) or {}
    if name == "mlp" and "depth" not in params and "width" not in params:
        hidden = params.get("hidden", valid.get("hidden"))
        params["hidden"] = [width] * (1 if isinstance(hidden, int) else len(hidden))
    elif name == "convnet":
        params["channels"] = width
    elif name == "simplecnn":
        channels = list(params.get("channels", valid.get("channels")))
        params["channels"] = [max(1, round(width * c / channels[0])) for c in channels]
    elif "width" in valid:
        params["width"] = width
    else:
        raise InitbenchError(f"model '{name}' has no width parameter for --widths (mlp: hidden, simplecnn: channels, "
                             "your own model: a parameter named width)")
    return format_call(name, params)


def with_depth(spec: str | Mapping[str, Any], depth: int) -> str:
    """The model spec at `depth`, for a probe across depth: the model's `depth` parameter set (an MLP given as
    `hidden=[...]` becomes `depth` layers of its first width). A model without a depth parameter is refused."""
    name, params = check_model(spec)
    valid = model_params(name) or {}
    if "depth" not in valid:
        raise InitbenchError(f"model '{name}' has no depth parameter for --depths (mlp, convnet, resnet and vit "
                             "have one; your own model: a parameter named depth)")
    if name == "mlp" and "hidden" in params:
        hidden = params.pop("hidden")
        params["width"] = hidden if isinstance(hidden, int) else hidden[0]
    params["depth"] = depth
    return format_call(name, params)
