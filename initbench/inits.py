"""Init strategies: a decorator registry, the `model.named_modules()` walk, and its manifest.

A strategy is a plain function that fills one tensor in place, `fn(tensor, **params)`, exactly
like the functions of `torch.nn.init`. The walk decides which tensor gets what: weights of known
layers (and >=2-D parameters of custom modules) get the strategy, biases follow the bias policy,
norm layers get weight 1 / bias 0, and everything else is kept -- with the reason in the manifest.
Two strategies work on the whole model instead: `pytorch_default` and the data-dependent `lsuv`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import init as tinit

from initbench.errors import InitbenchError, unknown_name
from initbench.spec import format_call, parse_call

REQUIRED = inspect.Parameter.empty
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
# PyTorch's own default for Linear/Conv weights: kaiming_uniform_(a=sqrt(5)).
DEFAULT_FALLBACK = "kaiming_uniform(a=2.23606797749979)"
# Parameters every strategy accepts: they steer the walk, not the tensor function.
WALK_PARAMS: dict[str, Any] = {"bias": "zeros", "norm": "ones", "fallback": DEFAULT_FALLBACK}
WALK_HELP = {
    "bias": "zeros | keep | <number>: what biases get",
    "norm": "ones | keep: norm layers to weight 1 / bias 0, or left as they are",
    "fallback": "scheme for tensors this one does not fit",
}
ENTRY_POINT_GROUP = "initbench.inits"


class NotApplicable(Exception):
    """Raised by a tensor function for a tensor it cannot fill; the walk then uses the fallback."""


@dataclass(frozen=True)
class Strategy:
    """A registered init scheme: its function, parameter defaults and allowed values."""

    name: str
    fn: Callable[..., Any]
    description: str
    params: dict[str, Any]
    types: dict[str, type | str | None] = field(default_factory=dict)
    choices: dict[str, tuple] = field(default_factory=dict)
    whole_model: bool = False
    walk_defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "builtin"

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate user parameters and merge them over the defaults (walk parameters included)."""
        defaults = {**self.params, **WALK_PARAMS, **self.walk_defaults}
        out = dict(defaults)
        for key, value in given.items():
            if key not in defaults:
                raise InitbenchError(
                    f"init '{self.name}' has no parameter '{key}'; valid: {', '.join(defaults)}"
                )
            out[key] = _check_value(self, key, value, self.types.get(key))
        missing = [k for k, v in out.items() if v is REQUIRED]
        if missing:
            raise InitbenchError(f"init '{self.name}' needs {', '.join(f'{k}=...' for k in missing)}")
        _check_bias_norm(self.name, out)
        return out


def _check_value(strategy: Strategy, key: str, value: Any, expected: type | str | None) -> Any:
    where = f"parameter '{key}' of init '{strategy.name}'"
    if key == "gain" and isinstance(value, str):
        if value not in ("auto", *NONLINEARITIES):
            raise InitbenchError(f"{where} must be a number, 'auto' or one of {', '.join(NONLINEARITIES)}")
        return value
    if expected is bool and not isinstance(value, bool):
        raise InitbenchError(f"{where} must be true or false, got {value!r}")
    if expected in (int, float, "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InitbenchError(f"{where} must be a number, got {value!r}")
        if expected is int and value != int(value):
            raise InitbenchError(f"{where} must be a whole number, got {value!r}")
        if expected != "number":
            value = expected(value)
        if not math.isfinite(value):
            raise InitbenchError(f"{where} must be finite, got {value!r}")
    if expected is str and not isinstance(value, str):
        raise InitbenchError(f"{where} must be a name, got {value!r}")
    choices = strategy.choices.get(key)
    if choices and value not in choices:
        raise InitbenchError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _check_bias_norm(name: str, params: dict[str, Any]) -> None:
    bias = params["bias"]
    if isinstance(bias, bool) or not (bias in ("zeros", "keep") or isinstance(bias, int | float)):
        raise InitbenchError(f"parameter 'bias' of init '{name}' must be zeros, keep or a number, got {bias!r}")
    if params["norm"] not in ("ones", "keep"):
        raise InitbenchError(f"parameter 'norm' of init '{name}' must be ones or keep, got {params['norm']!r}")


_REGISTRY: dict[str, Strategy] = {}
_entry_points_loaded = False


def register_init(
    name: str,
    *,
    description: str | None = None,
    choices: Mapping[str, tuple] | None = None,
    whole_model: bool = False,
    walk_defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(tensor, **params)` as init strategy `name`; keyword defaults are its parameters."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = _make_strategy(
            name, fn, description, choices, whole_model, walk_defaults, source=fn.__module__
        )
        return fn

    return decorator


_TYPES = {"float": float, "int": int, "str": str, "bool": bool, float: float, int: int, str: str, bool: bool}
_DEFAULT_TYPES = {float: "number", int: "number", str: str, bool: bool}


def _make_strategy(
    name: str,
    fn: Callable[..., Any],
    description: str | None = None,
    choices: Mapping[str, tuple] | None = None,
    whole_model: bool = False,
    walk_defaults: Mapping[str, Any] | None = None,
    source: str = "builtin",
) -> Strategy:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise InitbenchError(f"init '{name}': cannot read the signature of {fn!r}") from None
    skip = 3 if whole_model else 1  # (model, data, walk) or (tensor)
    own = [p for p in list(sig.parameters.values())[skip:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    params = {p.name: p.default for p in own}
    # The type comes from the annotation, else from the default (None and required say nothing;
    # an unannotated number, like torch.nn.init's `gain=1`, takes any number).
    types = {p.name: _TYPES.get(p.annotation) or _DEFAULT_TYPES.get(type(p.default)) for p in own}
    doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
    return Strategy(name, fn, doc, params, types, dict(choices or {}), whole_model, dict(walk_defaults or {}),
                    "builtin" if source == __name__ else source)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the built-in list
            raise InitbenchError(f"entry point '{ep.name}' ({ep.value}) of {ENTRY_POINT_GROUP} failed to load: {exc}")
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = obj if isinstance(obj, Strategy) else _make_strategy(ep.name, obj, source=ep.value)


def list_inits(pattern: str = "*") -> list[Strategy]:
    """The registered strategies (built-in and entry points) whose name matches an fnmatch pattern."""
    import fnmatch

    _load_entry_points()
    return [s for n, s in sorted(_REGISTRY.items()) if fnmatch.fnmatch(n, pattern)]


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by registered name or import it from `package.module:function`."""
    if ":" in name:
        return _import_strategy(name)
    _load_entry_points()
    if name not in _REGISTRY:
        raise unknown_name("init", name, _REGISTRY, suggestions=3)
    return _REGISTRY[name]


def _import_strategy(ref: str) -> Strategy:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise InitbenchError(f"cannot import '{module_name}' for init '{ref}': {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise InitbenchError(f"module '{module_name}' has no function '{attr}' (init '{ref}')")
    if isinstance(obj, Strategy):
        return obj
    if not callable(obj):
        raise InitbenchError(f"'{ref}' is not a function")
    return _make_strategy(ref, obj, source=ref)


# ---------------------------------------------------------------- choosing an init by name

@dataclass(frozen=True)
class InitSpec:
    """An init chosen by name with parameters, e.g. `kaiming_normal(mode=fan_out)`."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return format_call(self.name, self.params)


def parse_init(spec: str | Mapping[str, Any] | InitSpec) -> InitSpec:
    """Parse `NAME`, `NAME(key=value, ...)` or a YAML mapping `{name: NAME, key: value}`."""
    if isinstance(spec, InitSpec):
        return spec
    return InitSpec(*parse_call(spec, "init"))


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


# ---------------------------------------------------------------- the strategies

_MODE = {"mode": ("fan_in", "fan_out")}
_KAIMING = {**_MODE, "nonlinearity": ("auto", *NONLINEARITIES)}


def _need_fans(t: Tensor) -> None:
    if t.dim() < 2:
        raise NotApplicable(f"needs a tensor of at least 2 dimensions, got {t.dim()}-D")


@register_init("uniform")
def uniform(t: Tensor, a: float = 0.0, b: float = 1.0) -> None:
    """U(a, b), torch.nn.init.uniform_."""
    tinit.uniform_(t, a, b)


@register_init("normal")
def normal(t: Tensor, mean: float = 0.0, std: float = 1.0) -> None:
    """N(mean, std^2), torch.nn.init.normal_."""
    tinit.normal_(t, mean, std)


@register_init("trunc_normal")
def trunc_normal(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> None:
    """N(mean, std^2) redrawn outside the absolute bounds [a, b], torch.nn.init.trunc_normal_."""
    tinit.trunc_normal_(t, mean, std, a, b)


@register_init("constant")
def constant(t: Tensor, value: float = REQUIRED) -> None:
    """Every weight = value, torch.nn.init.constant_ (pathological: no symmetry breaking)."""
    tinit.constant_(t, value)


@register_init("zeros")
def zeros(t: Tensor) -> None:
    """All zeros, torch.nn.init.zeros_ (pathological: no symmetry breaking, no signal)."""
    tinit.zeros_(t)


@register_init("ones")
def ones(t: Tensor) -> None:
    """All ones, torch.nn.init.ones_ (pathological)."""
    tinit.ones_(t)


@register_init("eye")
def eye(t: Tensor) -> str | None:
    """Identity, torch.nn.init.eye_; 3-5-D conv weights get dirac_ (the conv identity) instead."""
    if t.dim() == 2:
        tinit.eye_(t)
        return None
    if t.dim() in (3, 4, 5):
        tinit.dirac_(t)
        return f"eye on a {t.dim()}-D tensor: applied dirac_ (identity convolution)"
    raise NotApplicable(f"needs a 2-D to 5-D tensor, got {t.dim()}-D")


@register_init("dirac")
def dirac(t: Tensor, groups: int = 1) -> str | None:
    """Identity convolution, torch.nn.init.dirac_; 2-D weights get eye_ instead."""
    if t.dim() in (3, 4, 5):
        tinit.dirac_(t, groups)
        return None
    if t.dim() == 2:
        tinit.eye_(t)
        return "dirac on a 2-D tensor: applied eye_ (identity matrix)"
    raise NotApplicable(f"needs a 2-D to 5-D tensor, got {t.dim()}-D")


@register_init("xavier_uniform")
def xavier_uniform(t: Tensor, gain: float = 1.0) -> None:
    """Glorot & Bengio 2010: U(-b, b), b = gain*sqrt(6/(fan_in+fan_out)). gain may be a nonlinearity or auto."""
    _need_fans(t)
    tinit.xavier_uniform_(t, gain)


@register_init("xavier_normal")
def xavier_normal(t: Tensor, gain: float = 1.0) -> None:
    """Glorot & Bengio 2010: N(0, s^2), s = gain*sqrt(2/(fan_in+fan_out)). gain may be a nonlinearity or auto."""
    _need_fans(t)
    tinit.xavier_normal_(t, gain)


@register_init("kaiming_uniform", choices=_KAIMING)
def kaiming_uniform(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "auto") -> None:
    """He et al. 2015: U(-b, b), b = gain*sqrt(3/fan); nonlinearity inferred from the model by default."""
    _need_fans(t)
    tinit.kaiming_uniform_(t, a, mode, nonlinearity)


@register_init("kaiming_normal", choices=_KAIMING)
def kaiming_normal(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "auto") -> None:
    """He et al. 2015: N(0, s^2), s = gain/sqrt(fan); nonlinearity inferred from the model by default."""
    _need_fans(t)
    tinit.kaiming_normal_(t, a, mode, nonlinearity)


@register_init("orthogonal")
def orthogonal(t: Tensor, gain: float = 1.0) -> None:
    """Saxe et al. 2013: a (semi-)orthogonal matrix times gain, torch.nn.init.orthogonal_."""
    _need_fans(t)
    tinit.orthogonal_(t, gain)


@register_init("sparse")
def sparse(t: Tensor, sparsity: float = 0.1, std: float = 0.01) -> None:
    """Martens 2010: N(0, std^2) with a fraction `sparsity` of each column zero; 2-D only (else fallback)."""
    if t.dim() != 2:
        raise NotApplicable(f"sparse_ needs a 2-D tensor, got {t.dim()}-D")
    tinit.sparse_(t, sparsity, std)


# TensorFlow's truncated normal cuts at 2 std, which shrinks the std by this factor; dividing by it
# restores the intended variance (TF VarianceScaling, timm's variance_scaling_).
_TRUNC_STD = 0.87962566103423978


@register_init(
    "variance_scaling",
    choices={"mode": ("fan_in", "fan_out", "fan_avg"), "distribution": ("truncated_normal", "normal", "uniform")},
)
def variance_scaling(t: Tensor, scale: float = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal") -> None:
    """TensorFlow/timm VarianceScaling: variance = scale/fan, truncated at 2 std with variance correction."""
    _need_fans(t)
    fan_in, fan_out = fans(t)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / fan
    if distribution == "truncated_normal":
        tinit.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0).mul_(math.sqrt(variance) / _TRUNC_STD)
    elif distribution == "normal":
        tinit.normal_(t, 0.0, math.sqrt(variance))
    else:
        bound = math.sqrt(3.0 * variance)
        tinit.uniform_(t, -bound, bound)


@register_init("lecun_normal")
def lecun_normal(t: Tensor) -> None:
    """LeCun 1998 as in TF/timm: truncated normal with variance 1/fan_in (the SELU companion)."""
    variance_scaling(t, 1.0, "fan_in", "truncated_normal")


@register_init("lecun_uniform")
def lecun_uniform(t: Tensor) -> None:
    """LeCun 1998 as in TF/timm: U(-b, b) with variance 1/fan_in."""
    variance_scaling(t, 1.0, "fan_in", "uniform")


@register_init("pytorch_default", whole_model=True, walk_defaults={"bias": "keep", "norm": "keep"})
def pytorch_default(model: nn.Module, data: Tensor | None, walk: Walk) -> None:
    """Each layer's own reset_parameters(), PyTorch's default init."""
    reset: set[int] = set()
    for full, module, pname, t, role, _ in _iter_params(model):
        if id(module) not in reset and hasattr(module, "reset_parameters"):
            module.reset_parameters()
            reset.add(id(module))
        if role == "bias" and walk.params["bias"] != "keep":
            walk.apply_bias(full, module, t)
        elif role == "norm" and walk.params["norm"] != "keep":
            walk.apply_norm(full, module, pname, t)
        elif id(module) in reset:
            walk.record(full, module, role, t, "pytorch_default", note=f"{type(module).__name__}.reset_parameters()")
        else:
            walk.record(full, module, role, t, "kept", note="module has no reset_parameters()")


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
