"""The built-in models: an MLP and the SimpleCNN of the source documents, each shape-adaptive to the data."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from initbench.errors import InitbenchError
from initbench.models.build import register_model
from initbench.registry import check_size, check_widths

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


def activation_module(model: str, activation: str) -> tuple[Callable[[], nn.Module], str]:
    """(module factory, the nonlinearity torch.nn.init knows it by) for a built-in model's `activation`."""
    if activation not in _ACTIVATIONS:
        raise InitbenchError(f"model '{model}': unknown activation '{activation}'; valid: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[activation]


@register_model("mlp")
class MLP(nn.Module):
    """A multilayer perceptron: Linear + activation per hidden layer, then a Linear readout; `hidden` or `depth`.

    The hidden layers are `hidden` (a list of widths), or `depth` layers of `width` (a deep plain network: depth 30,
    width 128 is He et al.'s setting); parameters: in*W + W + (depth-1)*(W*W + W) + W*classes + classes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int] | int = (256, 128),
                 activation: str = "relu", depth: int | None = None, width: int | None = None) -> None:
        super().__init__()
        if depth is not None or width is not None:
            if hidden != (256, 128):
                raise InitbenchError("model 'mlp': give hidden=[...] or depth and width, not both")
            hidden = [check_size("mlp", "width", width or 128)] * check_size("mlp", "depth", depth or 2)
        hidden = check_widths("mlp", "hidden", hidden)
        make_act, self.nonlinearity = activation_module("mlp", activation)
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
        channels, fc = check_widths("simplecnn", "channels", channels), check_widths("simplecnn", "fc", fc)
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
