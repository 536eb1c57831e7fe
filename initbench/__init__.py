"""initbench: which weight-initialization scheme trains best, and how sure are we?"""

from typing import Any

from initbench.errors import InitbenchError

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

_FROM_INITS = {"InitSpec", "Manifest", "apply_init", "list_inits", "parse_init", "register_init"}


def __getattr__(name: str) -> Any:
    """The init library loads (with torch) on first use, so `initbench --help` and signal handling start at once."""
    if name in _FROM_INITS:
        from initbench import inits

        return getattr(inits, name)
    raise AttributeError(f"module 'initbench' has no attribute {name!r}")
