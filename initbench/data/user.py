"""The user's own datasets: a loader named by import path or entry point, whatever array-like or
torchvision-style datasets it returns turned into the tensors every run is served from."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from initbench.data.sources import Decoded
from initbench.errors import InitbenchError

_EXPECTED = ("expected (x_train, y_train, x_test, y_test) arrays, a mapping with those keys, or a (train, test) "
             "pair of torchvision-style datasets")


def user_dataset(name: str, fn: Callable[..., Any], root: Path, download: bool) -> Decoded:
    """Call a user's loader (given `root`/`download` if it takes them) and turn what it returns into tensors."""
    try:
        accepted = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in (("root", root), ("download", download)) if k in accepted}
    try:
        out = fn(**kwargs)
    except InitbenchError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InitbenchError(f"dataset '{name}' failed to load: {type(exc).__name__}: {reason}") from None
    if isinstance(out, Decoded):
        return out
    if isinstance(out, Mapping):
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in out]
        if missing:
            raise InitbenchError(f"dataset '{name}' returned a mapping without {', '.join(missing)}; {_EXPECTED}")
        out = (out["x_train"], out["y_train"], out["x_test"], out["y_test"])
    if isinstance(out, tuple | list) and len(out) == 2 and all(_is_dataset(d) for d in out):
        (x_train, y_train, classes), (x_test, y_test, _) = (_from_dataset(name, d) for d in out)
    elif isinstance(out, tuple | list) and len(out) == 4:
        (x_train, y_train, x_test, y_test), classes = (_tensor(name, v) for v in out), None
    else:
        raise InitbenchError(f"dataset '{name}' returned {type(out).__name__}; {_EXPECTED}")
    x_train, x_test = _images(name, x_train), _images(name, x_test)
    y_train, y_test = _labels(name, y_train, len(x_train)), _labels(name, y_test, len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InitbenchError(f"dataset '{name}': train inputs are {tuple(x_train.shape[1:])} but test inputs "
                             f"{tuple(x_test.shape[1:])}")
    if not len(y_train) or not len(y_test):
        raise InitbenchError(f"dataset '{name}': the {'train' if not len(y_train) else 'test'} split is empty")
    top = int(max(y_train.max(), y_test.max()))
    if classes is not None and top >= classes:
        raise InitbenchError(f"dataset '{name}' declares {classes} classes but has label {top}")
    return Decoded(x_train, y_train, x_test, y_test, classes or top + 1)


def _is_dataset(obj: Any) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, Tensor | np.ndarray)


def _tensor(name: str, value: Any) -> Tensor:
    try:
        return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise InitbenchError(f"dataset '{name}' returned {type(value).__name__} where an array was expected; "
                             f"{_EXPECTED}") from None


def _from_dataset(name: str, ds: Any) -> tuple[Tensor, Tensor, int | None]:
    """A torchvision-style dataset as (inputs, labels, number of classes): its `data`/`targets` arrays
    when it has them (channels-last images are turned channels-first), else its items one by one."""
    classes = len(ds.classes) if isinstance(getattr(ds, "classes", None), list | tuple) else None
    if hasattr(ds, "data") and hasattr(ds, "targets"):
        return _tensor(name, ds.data), _tensor(name, ds.targets), classes
    from torchvision.transforms.functional import pil_to_tensor

    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise InitbenchError(f"dataset '{name}': item {i} is {type(item).__name__}, not an (input, label) pair")
        x, y = item
        xs.append(pil_to_tensor(x) if hasattr(x, "getbands") else _tensor(name, x))
        try:
            ys.append(operator.index(y.item() if isinstance(y, Tensor | np.generic) else y))
        except (TypeError, ValueError):
            raise InitbenchError(f"dataset '{name}': item {i} has label {y!r}, not a class index") from None
    if len({tuple(x.shape) for x in xs}) > 1:
        raise InitbenchError(f"dataset '{name}': items have different shapes, e.g. {tuple(xs[0].shape)} and "
                             f"{next(tuple(x.shape) for x in xs if x.shape != xs[0].shape)}")
    return torch.stack(xs), torch.tensor(ys), classes


def _images(name: str, x: Tensor) -> Tensor:
    """Inputs as (N, C, H, W): (N, H, W) images get one channel, (N, D) features become (N, D, 1, 1),
    and (N, H, W, C) images with C of 1 or 3 (and H not 1 or 3) are turned channels-first."""
    if x.dtype == torch.bool or x.is_complex():
        raise InitbenchError(f"dataset '{name}': inputs must be numbers, got {x.dtype}")
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:  # channels-last images (N, H, W, 1 or 3), as numpy and torchvision's CIFAR keep them
        return x.permute(0, 3, 1, 2).contiguous() if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3) else x
    raise InitbenchError(f"dataset '{name}': inputs must be (N, C, H, W), (N, H, W) or (N, D), got shape "
                         f"{tuple(x.shape)}")


def _labels(name: str, y: Tensor, n: int) -> Tensor:
    if y.dim() != 1 or len(y) != n:
        raise InitbenchError(f"dataset '{name}': labels must be one integer per input ({n}), "
                             f"got shape {tuple(y.shape)}")
    if (y.is_floating_point() and not torch.equal(y, y.round())) or y.dtype == torch.bool or (len(y) and y.min() < 0):
        raise InitbenchError(f"dataset '{name}': labels must be class indices 0, 1, 2, ...")
    return y.long()
