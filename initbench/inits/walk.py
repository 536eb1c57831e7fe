"""The `model.named_modules()` walk that decides each parameter's role, and its manifest.

Weights of known layers (and >=2-D parameters of custom modules) get the strategy, biases follow
the bias policy, norm layers get weight 1 / bias 0, and everything else is kept -- with the reason
in the manifest.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import init as tinit

from initbench.errors import InitbenchError
from initbench.inits.registry import NONLINEARITIES, InitSpec, NotApplicable, Strategy, get_strategy, parse_init
from initbench.spec import format_call

# ---------------------------------------------------------------- the manifest

@dataclass
class ParamRecord:
    """What the walk did to one parameter tensor."""

    name: str
    module_type: str
    role: str
    shape: list[int]
    fan_in: int | None
    fan_out: int | None
    scheme: str
    params: dict[str, Any]
    note: str = ""
    mean: float | None = None
    std: float | None = None


@dataclass
class Manifest:
    """Per-parameter record of one `apply_init` call; JSON-serialisable and printable."""

    init: str
    nonlinearity: str
    records: list[ParamRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> dict[str, int]:
        """How many parameter tensors got each scheme."""
        return dict(Counter(r.scheme for r in self.records))

    def table(self) -> str:
        head = ("parameter", "type", "shape", "fan_in", "fan_out", "scheme", "std", "note")
        rows = [head] + [
            (r.name, r.module_type, "x".join(map(str, r.shape)), _s(r.fan_in), _s(r.fan_out),
             format_call(r.scheme, r.params),
             "-" if r.std is None else f"{r.std:.4g}", r.note)
            for r in self.records
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join([f"init: {self.init}    nonlinearity: {self.nonlinearity}", *lines])


def _s(v: int | None) -> str:
    return "-" if v is None else str(v)


# ---------------------------------------------------------------- the walk

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
WEIGHT_TYPES: tuple[type, ...] = (
    nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag, nn.RNNBase,
    nn.MultiheadAttention,
)
_ACTIVATIONS = {
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
    nn.SELU: "selu", nn.GELU: "relu", nn.SiLU: "relu", nn.ELU: "relu", nn.Mish: "relu",
}


def fans(t: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) with PyTorch's convention: dim 1 is input, dim 0 output, the rest receptive."""
    receptive = math.prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def infer_nonlinearity(model: nn.Module) -> tuple[str | None, float, str]:
    """The activation the gains are derived from: `model.nonlinearity`, else the one activation type used."""
    declared = getattr(model, "nonlinearity", None)
    if isinstance(declared, str) and declared in NONLINEARITIES:
        return declared, float(getattr(model, "negative_slope", 0.01)), f"{declared} (declared by the model)"
    found = {}
    for m in model.modules():
        for cls, name in _ACTIVATIONS.items():
            if type(m) is cls:
                found.setdefault(name, m)
    if len(found) == 1:
        (name, module), = found.items()
        slope = float(getattr(module, "negative_slope", 0.0))
        approx = "" if type(module) in (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SELU) else ", approximated"
        return name, slope, f"{name} (inferred from nn.{type(module).__name__}{approx})"
    why = f"mixed activations {sorted(found)}" if found else "no activation modules found"
    return None, 0.0, f"unknown ({why}; gains use each scheme's default)"


def _is_bias_name(pname: str) -> bool:
    return "bias" in pname or re.fullmatch(r"b\d*", pname) is not None


def _iter_params(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Tensor, str, str]]:
    """Yield (full name, module, local name, tensor, role, note) for every parameter, once."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(module, NORM_TYPES):
                yield full, module, pname, p, "norm", ""
            elif isinstance(module, WEIGHT_TYPES):
                yield full, module, pname, p, "bias" if _is_bias_name(pname) else "weight", ""
            elif _is_bias_name(pname):
                yield full, module, pname, p, "bias", "custom module parameter"
            elif p.dim() >= 2:
                yield full, module, pname, p, "weight", "custom parameter: fans assume PyTorch's [out, in, ...] layout"
            else:
                yield full, module, pname, p, "keep", f"{p.dim()}-D parameter of a custom module has no fans"


@dataclass
class Walk:
    """State of one `apply_init` call: resolved parameters, the inferred nonlinearity, the manifest."""

    strategy: Strategy
    params: dict[str, Any]
    nonlinearity: str | None
    negative_slope: float
    manifest: Manifest
    fallback: tuple[Strategy, dict[str, Any]]
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def record(self, full: str, module: nn.Module, role: str, t: Tensor, scheme: str,
               params: Mapping[str, Any] | None = None, note: str = "") -> None:
        fi, fo = fans(t) if t.dim() >= 2 else (None, None)
        self.manifest.records.append(
            ParamRecord(full, type(module).__name__, role, list(t.shape), fi, fo, scheme, dict(params or {}), note)
        )
        self.tensors[full] = t

    def fill(self, strategy: Strategy, params: Mapping[str, Any], t: Tensor) -> tuple[str, dict[str, Any], str]:
        """Fill one weight tensor; falls back (and says so) where the scheme does not fit."""
        resolved = self.tensor_params(strategy, params)
        try:
            note = strategy.fn(t, **resolved)  # torch.nn.init functions return the tensor: not a note
            return strategy.name, resolved, note if isinstance(note, str) else ""
        except NotApplicable as why:
            fb_strategy, fb_params = self.fallback
            if strategy is fb_strategy:
                raise InitbenchError(f"fallback '{strategy.name}' does not fit either: {why}") from None
            name, used, _ = self.fill(fb_strategy, fb_params, t)
            return name, used, f"fallback for {strategy.name}: {why}"

    def tensor_params(self, strategy: Strategy, params: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the tensor function's own parameters and resolve `auto` nonlinearities and named gains."""
        out = {k: v for k, v in params.items() if k in strategy.params}
        if out.get("nonlinearity") == "auto":
            out["nonlinearity"] = self.nonlinearity or "leaky_relu"  # torch's own default
            if self.nonlinearity == "leaky_relu" and out.get("a") == 0.0:
                out["a"] = self.negative_slope
        gain = out.get("gain")
        if gain == "auto":
            out["gain"] = tinit.calculate_gain(self.nonlinearity or "linear", self.negative_slope)
        elif isinstance(gain, str):
            out["gain"] = tinit.calculate_gain(gain)
        return out

    def apply_bias(self, full: str, module: nn.Module, t: Tensor) -> None:
        policy = self.params["bias"]
        if policy == "keep":
            self.record(full, module, "bias", t, "kept", note="bias policy: keep")
        else:
            value = 0.0 if policy == "zeros" else float(policy)
            t.fill_(value)
            self.record(full, module, "bias", t, "constant", {"value": value}, "bias policy")

    def apply_norm(self, full: str, module: nn.Module, pname: str, t: Tensor) -> None:
        if self.params["norm"] == "keep":
            self.record(full, module, "norm", t, "kept", note="norm policy: keep")
        else:
            value = 0.0 if _is_bias_name(pname) else 1.0
            t.fill_(value)
            self.record(full, module, "norm", t, "constant", {"value": value}, "norm layer")

    def run(self, model: nn.Module, strategy: Strategy | None = None) -> None:
        """The walk proper: every parameter of `model` once, by role."""
        strategy = strategy or self.strategy
        for full, module, pname, t, role, note in _iter_params(model):
            if role == "norm":
                self.apply_norm(full, module, pname, t)
            elif role == "bias":
                self.apply_bias(full, module, t)
            elif role == "keep":
                self.record(full, module, "keep", t, "kept", note=note)
            else:
                scheme, used, why = self.fill(strategy, self.params, t)
                self.record(full, module, "weight", t, scheme, used, "; ".join(filter(None, (note, why))))


def apply_init(model: nn.Module, spec: str | Mapping[str, Any] | InitSpec, data: Tensor | None = None) -> Manifest:
    """Initialise every parameter of `model` with `spec` and return what was done to each.

    `spec` is a name (`"orthogonal"`), a spec string (`"normal(std=0.02)"`), a YAML-style mapping,
    an `InitSpec`, or `"package.module:function"`. Data-dependent strategies (lsuv) need `data`,
    a batch of model inputs. Randomness comes from torch's global RNG only.
    """
    spec = parse_init(spec)
    strategy = get_strategy(spec.name)
    params = strategy.resolve(spec.params)
    fb = parse_init(params["fallback"])  # resolved once, so a bad fallback fails before any tensor changes
    fb_strategy = get_strategy(fb.name)
    fallback = (fb_strategy, {k: v for k, v in fb_strategy.resolve(fb.params).items() if k in fb_strategy.params})
    nl, slope, nl_note = infer_nonlinearity(model)
    walk = Walk(strategy, params, nl, slope, Manifest(str(spec), nl_note), fallback)
    with torch.no_grad():
        if strategy.whole_model:
            strategy.fn(model, data, walk, **{k: v for k, v in params.items() if k in strategy.params})
        else:
            walk.run(model)
        for rec in walk.manifest.records:
            t = walk.tensors[rec.name].detach().float()
            rec.mean = t.mean().item()
            rec.std = t.std().item() if t.numel() > 1 else None
    return walk.manifest
