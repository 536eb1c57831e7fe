"""The built-in strategies: all of `torch.nn.init`, the TensorFlow/timm variants and PyTorch's default."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import Tensor, nn
from torch.nn import init as tinit

from initbench.inits import gains
from initbench.inits.registry import REQUIRED, NotApplicable, Sampled, register_init
from initbench.inits.roles import fans_of, iter_params
from initbench.inits.walk import Walk
from initbench.params import NONLINEARITIES, AtLeast, Ordered, Within, rules

_MODE = {"mode": ("fan_in", "fan_out")}
_KAIMING = {**_MODE, "nonlinearity": ("auto", *NONLINEARITIES)}


@register_init("uniform", check=rules(Ordered("a", "b")))
def uniform(t: Tensor, a: float = 0.0, b: float = 1.0) -> Sampled:
    """U(a, b), torch.nn.init.uniform_."""
    tinit.uniform_(t, a, b)
    return Sampled("uniform", {"low": a, "high": b})


@register_init("normal", check=rules(AtLeast("std", 0)))
def normal(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Sampled:
    """N(mean, std^2), torch.nn.init.normal_."""
    tinit.normal_(t, mean, std)
    return Sampled("normal", {"mean": mean, "std": std})


@register_init("trunc_normal", check=rules(AtLeast("std", 0, strict=True), Ordered("a", "b")))
def trunc_normal(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Sampled:
    """N(mean, std^2) redrawn outside the absolute bounds [a, b], torch.nn.init.trunc_normal_."""
    tinit.trunc_normal_(t, mean, std, a, b)
    return Sampled("trunc_normal", {"mean": mean, "std": std, "low": a, "high": b})


@register_init("constant")
def constant(t: Tensor, value: float = REQUIRED) -> Sampled:
    """Every weight = value, torch.nn.init.constant_ (pathological: no symmetry breaking)."""
    tinit.constant_(t, value)
    return Sampled("constant", {"value": value})


@register_init("zeros")
def zeros(t: Tensor) -> Sampled:
    """All zeros, torch.nn.init.zeros_ (pathological: no symmetry breaking, no signal)."""
    tinit.zeros_(t)
    return Sampled("constant", {"value": 0.0})


@register_init("ones")
def ones(t: Tensor) -> Sampled:
    """All ones, torch.nn.init.ones_ (pathological)."""
    tinit.ones_(t)
    return Sampled("constant", {"value": 1.0})


@register_init("eye")
def eye(t: Tensor) -> Sampled:
    """Identity, torch.nn.init.eye_; 3-5-D conv weights get dirac_ (the conv identity) instead."""
    if t.dim() == 2:
        tinit.eye_(t)
        return Sampled("identity")
    if t.dim() in (3, 4, 5):
        tinit.dirac_(t)
        return Sampled("identity", note=f"eye on a {t.dim()}-D tensor: applied dirac_ (identity convolution)")
    raise NotApplicable(f"needs a 2-D to 5-D tensor, got {t.dim()}-D")


@register_init("dirac", check=rules(AtLeast("groups", 1)))
def dirac(t: Tensor, groups: int = 1) -> Sampled:
    """Identity convolution, torch.nn.init.dirac_; 2-D weights get eye_ instead."""
    if t.dim() in (3, 4, 5):
        tinit.dirac_(t, groups)
        return Sampled("identity")
    if t.dim() == 2:
        tinit.eye_(t)
        return Sampled("identity", note="dirac on a 2-D tensor: applied eye_ (identity matrix)")
    raise NotApplicable(f"needs a 2-D to 5-D tensor, got {t.dim()}-D")


def _fans(t: Tensor) -> tuple[int | float, int | float]:
    if t.dim() < 2:
        raise NotApplicable(f"needs a tensor of at least 2 dimensions, got {t.dim()}-D")
    return fans_of(t)


def _uniform(t: Tensor, std: float) -> Sampled:
    bound = math.sqrt(3.0) * std  # the same arithmetic as torch.nn.init, so the same numbers
    t.uniform_(-bound, bound)
    return Sampled("uniform", {"low": -bound, "high": bound})


def _gain(gain: float | str) -> float:
    return gains.gain(gain) if isinstance(gain, str) else gain


@register_init("xavier_uniform", check=rules(AtLeast("gain", 0)))
def xavier_uniform(t: Tensor, gain: float = 1.0) -> Sampled:
    """Glorot & Bengio 2010: U(-b, b), b = gain*sqrt(6/(fan_in+fan_out)). gain may be a nonlinearity or auto."""
    fan_in, fan_out = _fans(t)
    return _uniform(t, _gain(gain) * math.sqrt(2.0 / float(fan_in + fan_out)))


@register_init("xavier_normal", check=rules(AtLeast("gain", 0)))
def xavier_normal(t: Tensor, gain: float = 1.0) -> Sampled:
    """Glorot & Bengio 2010: N(0, s^2), s = gain*sqrt(2/(fan_in+fan_out)). gain may be a nonlinearity or auto."""
    fan_in, fan_out = _fans(t)
    std = _gain(gain) * math.sqrt(2.0 / float(fan_in + fan_out))
    t.normal_(0, std)
    return Sampled("normal", {"mean": 0.0, "std": std})


def _kaiming_std(t: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    fan_in, fan_out = _fans(t)
    nonlinearity = "leaky_relu" if nonlinearity == "auto" else nonlinearity  # torch.nn.init's default
    return gains.gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


@register_init("kaiming_uniform", choices=_KAIMING)
def kaiming_uniform(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "auto") -> Sampled:
    """He et al. 2015: U(-b, b), b = gain*sqrt(3/fan); nonlinearity inferred from the model by default."""
    return _uniform(t, _kaiming_std(t, a, mode, nonlinearity))


@register_init("kaiming_normal", choices=_KAIMING)
def kaiming_normal(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "auto") -> Sampled:
    """He et al. 2015: N(0, s^2), s = gain/sqrt(fan); nonlinearity inferred from the model by default."""
    std = _kaiming_std(t, a, mode, nonlinearity)
    t.normal_(0, std)
    return Sampled("normal", {"mean": 0.0, "std": std})


@register_init("orthogonal", check=rules(AtLeast("gain", 0)))
def orthogonal(t: Tensor, gain: float = 1.0) -> Sampled:
    """Saxe et al. 2013: a (semi-)orthogonal matrix times gain, torch.nn.init.orthogonal_."""
    _fans(t)
    tinit.orthogonal_(t, _gain(gain))
    return Sampled("orthogonal", {"gain": _gain(gain)})


@register_init("sparse", check=rules(Within("sparsity", 0, 1), AtLeast("std", 0)))
def sparse(t: Tensor, sparsity: float = 0.1, std: float = 0.01) -> Sampled:
    """Martens 2010: N(0, std^2) with a fraction `sparsity` of each column zero; 2-D only (else fallback)."""
    if t.dim() != 2:
        raise NotApplicable(f"sparse_ needs a 2-D tensor, got {t.dim()}-D")
    tinit.sparse_(t, sparsity, std)
    return Sampled("sparse_normal", {"mean": 0.0, "std": std, "zeros_per_column": math.ceil(sparsity * t.shape[0])})


# TensorFlow's truncated normal cuts at 2 std, which shrinks the std by this factor; dividing by it
# restores the intended variance (TF VarianceScaling, timm's variance_scaling_).
_TRUNC_STD = 0.87962566103423978


@register_init(
    "variance_scaling",
    choices={"mode": ("fan_in", "fan_out", "fan_avg"), "distribution": ("truncated_normal", "normal", "uniform")},
    check=rules(AtLeast("scale", 0, strict=True)),
)
def variance_scaling(t: Tensor, scale: float = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal") -> Sampled:
    """TensorFlow/timm VarianceScaling: variance = scale/fan, truncated at 2 std with variance correction."""
    fan_in, fan_out = _fans(t)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / fan
    if distribution == "truncated_normal":
        tinit.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0).mul_(math.sqrt(variance) / _TRUNC_STD)
        std = math.sqrt(variance) / _TRUNC_STD
        return Sampled("trunc_normal", {"mean": 0.0, "std": std, "low": -2 * std, "high": 2 * std})
    if distribution == "normal":
        tinit.normal_(t, 0.0, math.sqrt(variance))
        return Sampled("normal", {"mean": 0.0, "std": math.sqrt(variance)})
    return _uniform(t, math.sqrt(variance))


@register_init("lecun_normal")
def lecun_normal(t: Tensor) -> Sampled:
    """LeCun 1998 as in TF/timm: truncated normal with variance 1/fan_in (the SELU companion)."""
    return variance_scaling(t, 1.0, "fan_in", "truncated_normal")


@register_init("lecun_uniform")
def lecun_uniform(t: Tensor) -> Sampled:
    """LeCun 1998 as in TF/timm: U(-b, b) with variance 1/fan_in."""
    return variance_scaling(t, 1.0, "fan_in", "uniform")


def _post_order(module: nn.Module) -> Iterator[nn.Module]:
    for child in module.children():
        yield from _post_order(child)
    yield module


@register_init("pytorch_default", whole_model=True, walk_defaults={"bias": "keep", "norm": "keep"})
def pytorch_default(model: nn.Module, data: Tensor | None, walk: Walk) -> None:
    """Each layer's own reset_parameters() (or _reset_parameters()), PyTorch's default init.

    Children are reset before their parents, the order in which they were built, so a model
    reset under a seed equals the same model built under that seed (MultiheadAttention zeroes
    its out_proj's bias after the Linear has drawn it).
    """
    kept = {p.name: p.tensor.clone() for p in iter_params(model)
            if (rule := walk.rule_for(p.name)) is not None and rule.strategy is None}
    reset: dict[int, str] = {}
    for module in _post_order(model):
        if next(module.parameters(recurse=False), None) is None:
            continue
        for method in ("reset_parameters", "_reset_parameters"):
            if callable(getattr(module, method, None)):
                getattr(module, method)()
                reset[id(module)] = f"{type(module).__name__}.{method}()"
                break
    for p in iter_params(model):
        if p.name in kept:  # a `keep` rule: the value from before the reset
            p.tensor.copy_(kept[p.name])
        if walk.rule_for(p.name) is not None:
            walk.apply(p)
        elif p.role == "bias" and walk.params["bias"] != "keep":
            walk.apply_bias(p)
        elif p.role == "norm" and walk.params["norm"] != "keep":
            walk.apply_norm(p)
        elif id(p.module) in reset:
            walk.record(p, "pytorch_default", note=reset[id(p.module)])
        else:
            walk.record(p, "kept", note="module has no reset_parameters()")
