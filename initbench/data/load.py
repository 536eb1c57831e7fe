"""A dataset by name (built-in, entry point or `package.module:load`), decoded once per process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from initbench.data.sources import DATASETS, Decoded
from initbench.data.user import user_dataset
from initbench.datasets import default_data_dir
from initbench.errors import InitbenchError

_CACHE: dict[tuple[str, str], Decoded] = {}


def _loader(name: str) -> Callable[[Path, bool], Decoded]:
    fn, source = DATASETS.find(name)
    if source == "builtin":
        return fn
    if not callable(fn):
        raise InitbenchError(f"dataset '{name}' is not callable: it must be a function returning "
                             f"(x_train, y_train, x_test, y_test) or (train, test) datasets")
    return lambda root, download: user_dataset(name, fn, root, download)


def check_dataset(name: str) -> None:
    _loader(name)


def decode(name: str, data_dir: Path | None = None, download: bool = True) -> Decoded:
    """Decode a dataset once per process (a sweep's runs share it)."""
    loader = _loader(name)
    root = Path(data_dir or default_data_dir())
    key = (name, str(root.resolve()))
    if key not in _CACHE:
        _CACHE[key] = loader(root, download)
    return _CACHE[key]
