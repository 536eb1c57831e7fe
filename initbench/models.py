"""The models under study, built for a dataset's input shape: SimpleCNN, an MLP, and the user's own.

A user model is any callable `build(input_shape, num_classes, **params) -> nn.Module`, named on the
command line as `package.module:build` or installed under the `initbench.models` entry-point group.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from initbench.errors import InitbenchError
from initbench.plugins import entry_point_group, find
from initbench.syntax import parse_call

_MODELS: dict[str, Callable[..., nn.Module]] = {}
MODEL_GROUP = "initbench.models"


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a model class built as `cls(input_shape, num_classes, **params)`."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        _MODELS[name] = cls
        return cls

    return decorator


def list_models() -> dict[str, Callable[..., nn.Module]]:
    """Built-in models and those installed under the `initbench.models` entry-point group."""
    plugins = {name: obj for name, (obj, _) in entry_point_group(MODEL_GROUP)[0].items() if name not in _MODELS}
    return dict(sorted({**_MODELS, **plugins}.items()))


def _get(name: str) -> Callable[..., nn.Module]:
    fn = find(name, "model", MODEL_GROUP, _MODELS)
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


def check_model(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Resolve a model spec's name (built-in, entry point or import path) and check its parameters."""
    name, params = parse_call(spec, "model")
    valid = model_params(name)
    for key in params:
        if valid is not None and key not in valid:
            raise InitbenchError(f"model '{name}' has no parameter '{key}'; valid: {', '.join(valid) or 'none'}")
    return name, params


def build_model(spec: str | Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build `simplecnn`, `mlp(hidden=[512, 256], activation=tanh)`, `mypkg.models:build`, ... for inputs of
    `input_shape` (C, H, W) and `num_classes` outputs."""
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
    from initbench.syntax import format_call

    name, params = check_model(spec)
    valid = model_params(name) or {}
    if name == "mlp":
        hidden = params.get("hidden", valid.get("hidden"))
        params["hidden"] = [width] * (1 if isinstance(hidden, int) else len(hidden))
    elif name == "simplecnn":
        channels = list(params.get("channels", valid.get("channels")))
        params["channels"] = [max(1, round(width * c / channels[0])) for c in channels]
    elif "width" in valid:
        params["width"] = width
    else:
        raise InitbenchError(f"model '{name}' has no width parameter for --widths (mlp: hidden, simplecnn: channels, "
                             "your own model: a parameter named width)")
    return format_call(name, params)


_ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    # name -> (module factory, the nonlinearity torch.nn.init.calculate_gain knows it by)
    "relu": (nn.ReLU, "relu"),
    "leaky_relu": (nn.LeakyReLU, "leaky_relu"),
    "tanh": (nn.Tanh, "tanh"),
    "sigmoid": (nn.Sigmoid, "sigmoid"),
    "selu": (nn.SELU, "selu"),
    "gelu": (nn.GELU, "gelu"),
    "silu": (nn.SiLU, "silu"),
    "elu": (nn.ELU, "elu"),
    "identity": (nn.Identity, "linear"),
}


@register_model("mlp")
class MLP(nn.Module):
    """A multilayer perceptron: flatten, then Linear + activation per hidden layer, then a Linear readout."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int] | int = (256, 128),
                 activation: str = "relu") -> None:
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
            raise InitbenchError(f"model 'mlp': hidden must be a list of positive integers, got {hidden!r}")
        if activation not in _ACTIVATIONS:
            raise InitbenchError(f"model 'mlp': unknown activation '{activation}'; valid: {', '.join(_ACTIVATIONS)}")
        make_act, self.nonlinearity = _ACTIVATIONS[activation]
        self.negative_slope = 0.01  # nn.LeakyReLU's default
        widths = [math.prod(input_shape), *hidden]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i, (a, b) in enumerate(itertools.pairwise(widths), 1):
            layers += [(f"fc{i}", nn.Linear(a, b)), (f"act{i}", make_act())]
        layers.append(("out", nn.Linear(widths[-1], num_classes)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_model("simplecnn")
class SimpleCNN(nn.Module):
    """A small CNN: three (3x3 conv, ReLU, 2x2 max-pool) blocks of 32/64/128 channels, FC 512-64-classes.

    The first FC layer's width follows from the input (2048 for 3x32x32, 1152 for 1x28x28, 128 for 8x8).
    """

    nonlinearity = "relu"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: list[int] = (32, 64, 128),
                 fc: list[int] = (512, 64)) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise InitbenchError(f"model 'simplecnn' needs image inputs (C, H, W), got shape {tuple(input_shape)}")
        c, h, w = input_shape
        blocks = len(channels)
        if min(h, w) < 2**blocks:
            raise InitbenchError(
                f"model 'simplecnn' needs images of at least {2**blocks}x{2**blocks} pixels for {blocks} "
                f"pooling steps, got {h}x{w}"
            )
        self.features = nn.Sequential()
        for i, out in enumerate(channels, 1):
            self.features.add_module(f"layer{i}", nn.Sequential(OrderedDict([
                (f"conv{i}", nn.Conv2d(c, out, kernel_size=3, stride=1, padding=1)),
                (f"relu{i}", nn.ReLU(inplace=True)),
                (f"pool{i}", nn.MaxPool2d(2, 2)),
            ])))
            c, h, w = out, h // 2, w // 2
        widths = [c * h * w, *fc]
        head: list[tuple[str, nn.Module]] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths), 1):
            head += [(f"fc{i}", nn.Linear(a, b)), (f"fc_relu{i}", nn.ReLU(inplace=True))]
        head.append((f"fc{len(widths)}", nn.Linear(widths[-1], num_classes)))
        self.classifier = nn.Sequential(OrderedDict(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
