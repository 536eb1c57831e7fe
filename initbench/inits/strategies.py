"""The built-in strategies: all of `torch.nn.init`, the TensorFlow/timm variants and PyTorch's default."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import init as tinit

from initbench.inits.registry import NONLINEARITIES, REQUIRED, NotApplicable, register_init
from initbench.inits.walk import Walk, _iter_params, fans

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
