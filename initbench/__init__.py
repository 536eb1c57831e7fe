"""initbench: which weight-initialization scheme trains best, and how sure are we?"""

from initbench.errors import InitbenchError
from initbench.inits import InitSpec, Manifest, apply_init, list_inits, parse_init, register_init

__all__ = [
    "InitSpec",
    "InitbenchError",
    "Manifest",
    "apply_init",
    "list_inits",
    "parse_init",
    "register_init",
]
__version__ = "0.1.0"
