"""Init strategies: a decorator registry, the `model.named_modules()` walk, and its manifest.

A strategy is a plain function that fills one tensor in place, `fn(tensor, **params)`, exactly
like the functions of `torch.nn.init`. The walk decides which tensor gets what and records it.
Two strategies work on the whole model instead: `pytorch_default` and the data-dependent `lsuv`.
"""

from initbench.inits import lsuv as _lsuv  # noqa: F401  (registers lsuv)
from initbench.inits import strategies as _strategies  # noqa: F401  (registers the built-ins)
from initbench.inits.registry import (
    DEFAULT_FALLBACK,
    ENTRY_POINT_GROUP,
    NONLINEARITIES,
    REQUIRED,
    WALK_HELP,
    WALK_PARAMS,
    InitSpec,
    NotApplicable,
    Strategy,
    broken_plugins,
    get_strategy,
    list_inits,
    parse_init,
    register_init,
)
from initbench.inits.strategies import variance_scaling
from initbench.inits.walk import Manifest, ParamRecord, Walk, apply_init, fans, infer_nonlinearity

__all__ = [
    "DEFAULT_FALLBACK", "ENTRY_POINT_GROUP", "NONLINEARITIES", "REQUIRED", "WALK_HELP", "WALK_PARAMS", "InitSpec",
    "Manifest", "NotApplicable", "ParamRecord", "Strategy", "Walk", "apply_init", "broken_plugins", "fans",
    "get_strategy", "infer_nonlinearity", "list_inits", "parse_init", "register_init", "variance_scaling",
]
