"""Init strategies: a decorator registry, the `model.named_modules()` walk, and its manifest.

A strategy is a plain function that fills one tensor in place, `fn(tensor, **params)`, exactly
like the functions of `torch.nn.init`. The walk decides which tensor gets what and records it.
Two strategies work on the whole model instead: `pytorch_default` and the data-dependent `lsuv`.
"""

from initbench.inits import lsuv as _lsuv  # noqa: F401  (registers lsuv)
from initbench.inits import strategies as _strategies  # noqa: F401  (registers the built-ins)
from initbench.inits.gains import gain, infer_nonlinearity
from initbench.inits.manifest import Manifest, ParamRecord
from initbench.inits.registry import (
    REQUIRED,
    InitSpec,
    NotApplicable,
    Sampled,
    Strategy,
    broken_plugins,
    get_strategy,
    list_inits,
    parse_init,
    register_init,
)
from initbench.inits.roles import fans_of, torch_fans
from initbench.inits.strategies import variance_scaling
from initbench.inits.walk import Walk, apply_init, canonical_init, display_init, resolve_init
from initbench.params import DEFAULT_FALLBACK, NONLINEARITIES, WALK_HELP, WALK_PARAMS

__all__ = [
    "DEFAULT_FALLBACK", "NONLINEARITIES", "REQUIRED", "WALK_HELP", "WALK_PARAMS", "InitSpec",
    "Manifest", "NotApplicable", "ParamRecord", "Sampled", "Strategy", "Walk", "apply_init", "broken_plugins",
    "canonical_init", "display_init", "fans_of", "gain", "get_strategy", "infer_nonlinearity", "list_inits",
    "parse_init", "register_init", "resolve_init", "torch_fans", "variance_scaling",
]
