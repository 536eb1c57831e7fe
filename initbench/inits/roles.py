"""Which parameter is what: each parameter's role, packed blocks and fans, read from its module.

Roles come from the module that owns a parameter, never from its name alone: a 2-D relative
position table called `..._bias_table` is a weight, and the bias of a custom module is a 1-D
parameter registered under a bias name. Packed weights hold several matrices along dim 0 (an
LSTM's 4 gates, an attention layer's q/k/v); they are filled block by block so that each block
gets the fans and the orthogonality it would have as a separate layer.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag)
GATES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n")}
QKV = ("q", "k", "v")


@dataclass
class Param:
    """One parameter as the walk sees it."""

    name: str  # full dotted name, as in model.named_parameters()
    module: nn.Module
    local: str  # its name inside `module`
    tensor: Tensor
    role: str  # weight | bias | norm | attn_bias_kv | keep
    note: str = ""
    blocks: tuple[str, ...] = ()  # names of the matrices packed along dim 0, if more than one


def is_bias_name(local: str) -> bool:
    return "bias" in local or re.fullmatch(r"b\d*", local) is not None


_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)(_l\d+)?(_reverse)?")
_RNN_BIAS = re.compile(r"bias_(ih|hh)(_l\d+)?(_reverse)?")
_CELL_GATES = {nn.LSTMCell: GATES["LSTM"], nn.GRUCell: GATES["GRU"]}


def _gates(module: nn.Module) -> tuple[str, ...]:
    if isinstance(module, nn.RNNBase):
        return GATES.get(module.mode, ())
    return _CELL_GATES.get(type(module), ())


def rnn_nonlinearity(module: nn.Module) -> str | None:
    """The activation inside a recurrent layer or cell (tanh, or relu for RNN(nonlinearity='relu')), else None."""
    if isinstance(module, nn.RNNBase):
        return "relu" if module.mode == "RNN_RELU" else "tanh"
    if isinstance(module, nn.RNNCellBase):
        return getattr(module, "nonlinearity", "tanh")
    return None


def _role(module: nn.Module, local: str, p: Tensor) -> tuple[str, str, tuple[str, ...]]:
    if isinstance(module, NORM_TYPES) and local in ("weight", "bias"):
        return "norm", "", ()
    if isinstance(module, LAYER_TYPES) and local in ("weight", "bias"):
        return local, "", ()
    if isinstance(module, nn.RNNBase | nn.RNNCellBase):
        if _RNN_BIAS.fullmatch(local):
            return "bias", "", ()
        if _RNN_WEIGHT.fullmatch(local):
            return "weight", "", _gates(module) if not local.startswith("weight_hr") else ()
    if isinstance(module, nn.MultiheadAttention):
        if local in ("bias_k", "bias_v"):
            return "attn_bias_kv", "", ()
        if local == "in_proj_bias":
            return "bias", "", ()
        if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return "weight", "", QKV if local == "in_proj_weight" else ()
    # a parameter of a custom module (or one a subclass of a known layer adds)
    if p.dim() == 1 and is_bias_name(local):
        return "bias", "custom module parameter", ()
    if p.dim() >= 2:
        return "weight", "custom parameter: fans assume PyTorch's [out, in, ...] layout", ()
    return "keep", f"{p.dim()}-D parameter of a custom module has no fans", ()


def iter_params(model: nn.Module) -> Iterator[Param]:
    """Every parameter of `model` once (shared ones at their first owner), with its role."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            role, note, blocks = _role(module, local, p)
            yield Param(f"{mname}.{local}" if mname else local, module, local, p, role, note, blocks)


def split_blocks(param: Param, split: bool) -> list[tuple[str, Tensor]]:
    """The (block name, view) pieces a weight is filled in: its packed blocks, or the whole tensor."""
    t = param.tensor
    if not split or len(param.blocks) < 2 or t.shape[0] % len(param.blocks):
        return [("", t)]
    return list(zip(param.blocks, t.chunk(len(param.blocks), dim=0), strict=True))


def torch_fans(t: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) with PyTorch's convention: dim 1 is input, dim 0 output, the rest receptive."""
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def _whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def layer_fans(module: nn.Module, t: Tensor, signal: bool) -> tuple[int | float, int | float, str]:
    """(fan_in, fan_out, note) of a weight (or one block of it).

    With `signal`, the fans count what the forward and backward signal sum over: a transposed
    convolution's weight is [in, out/groups, *kernel], and each output sums over
    in/groups x kernel / stride inputs on average (fan_out: out/groups x kernel); a grouped
    convolution's fan_out is out/groups x kernel. Otherwise PyTorch's convention (`fans=torch`).
    """
    fan_in, fan_out = torch_fans(t)
    if not signal or not isinstance(module, nn.modules.conv._ConvNd) or t.dim() < 3:
        return fan_in, fan_out, ""
    kernel, groups = math.prod(t.shape[2:]), module.groups
    if module.transposed:
        fan_in = _whole(t.shape[0] // groups * kernel / math.prod(module.stride))
        fan_out = t.shape[1] * kernel
        return fan_in, fan_out, "fans of a transposed conv: in/groups x kernel / stride, out/groups x kernel"
    if groups > 1:
        return fan_in, fan_out // groups, "fan_out of a grouped conv: out/groups x kernel"
    return fan_in, fan_out, ""


_DECLARED: contextvars.ContextVar[tuple[Tensor, int | float, int | float] | None] = contextvars.ContextVar(
    "initbench_fans", default=None)


@contextlib.contextmanager
def declared_fans(t: Tensor, fan_in: int | float, fan_out: int | float) -> Iterator[None]:
    """While a strategy fills `t`, `fans_of(t)` answers these fans (the walk's, not PyTorch's)."""
    token = _DECLARED.set((t, fan_in, fan_out))
    try:
        yield
    finally:
        _DECLARED.reset(token)


def fans_of(t: Tensor) -> tuple[int | float, int | float]:
    """The fans a fan-based strategy should use for `t`: the walk's when it is filling `t`, else PyTorch's."""
    declared = _DECLARED.get()
    if declared is not None and declared[0] is t:
        return declared[1], declared[2]
    return torch_fans(t)
