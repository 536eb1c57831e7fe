"""The models under study, built for a dataset's input shape: the built-ins (zoo) and the user's own, by name (build).

A user model is any callable `build(input_shape, num_classes, **params) -> nn.Module`, named on the
command line as `package.module:build` or installed under the `initbench.models` entry-point group.
"""

from initbench.models import deep as _deep  # noqa: F401  (registers the deep families)
from initbench.models import zoo as _zoo  # noqa: F401  (registers the built-ins)
from initbench.models.build import (
    MODELS,
    build_model,
    check_model,
    forward_macs,
    list_models,
    model_params,
    register_model,
    with_depth,
    with_width,
)

__all__ = ["MODELS", "build_model", "check_model", "forward_macs", "list_models", "model_params", "register_model",
           "with_depth", "with_width"]
