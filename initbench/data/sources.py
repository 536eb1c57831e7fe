"""The datasets themselves: MNIST, KMNIST, Fashion-MNIST, CIFAR-10/100 read by torchvision's own dataset classes (which
download them on a networked machine; Fashion-MNIST also from Debian's `dataset-fashion-mnist`), and `digits`
(scikit-learn's bundled 8x8 set), which works anywhere, offline. Each decodes once into in-memory tensors."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from initbench.datasets import DEBIAN_FASHION_MNIST, OFFLINE_HINT
from initbench.errors import InitbenchError
from initbench.registry import Registry


@dataclass
class Decoded:
    """A dataset's train and test splits as uint8/float tensors (N, C, H, W) and int64 labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int


DATASETS = Registry("dataset")  # name -> loader(root, download) -> Decoded (plug-ins, references: the user's loaders)


def register_dataset(name: str) -> Callable[[Callable[[Path, bool], Decoded]], Callable[[Path, bool], Decoded]]:
    """Register `loader(root, download) -> Decoded` as dataset `name`."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Built-in datasets and those installed under the `initbench.datasets` entry-point group."""
    return list(DATASETS.all())


def _torchvision(cls: type, root: Path, download: bool, label: str) -> tuple:
    """Load both splits through torchvision; a failed or impossible download is one clear error."""
    splits = []
    for train in (True, False):
        try:
            splits.append(cls(str(root), train=train, download=False))
        except RuntimeError:
            if not download:
                raise InitbenchError(f"{label} not found in {root} (download disabled); {OFFLINE_HINT}") from None
            before = _folders(root)
            try:  # torchvision prints its attempts; keep the terminal to our one line
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    splits.append(cls(str(root), train=train, download=True))
            except Exception as exc:
                _remove_new_empty(root, before)  # a failed download leaves no empty folders behind
                raise InitbenchError(
                    f"{label} not found in {root} and the download failed ({_reason(exc)}); {OFFLINE_HINT}"
                ) from None
    return tuple(splits)


def _reason(exc: Exception) -> str:
    """The cause in one line: torchvision's "Error downloading X:" is followed by each mirror's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    causes = [line for line in lines[1:] if not line.startswith("Tried ")]
    return f"{lines[0]} {causes[-1]}" if lines[0].endswith(":") and causes else lines[0]


def _folders(root: Path) -> set[Path]:
    """The folders that exist now at and under `root`, and above it up to the first that exists."""
    found = {p for p in (root, *root.parents) if p.is_dir()}
    return found | ({Path(d) for d, _, _ in os.walk(root)} if root.is_dir() else set())


def _remove_new_empty(root: Path, before: set[Path]) -> None:
    """Remove the folders made since `before` was taken, deepest first, where they hold nothing."""
    made = sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True)
    for path in made:
        with contextlib.suppress(OSError):
            path.rmdir()


def _mnist_like(cls: type, root: Path, download: bool, label: str) -> Decoded:
    train, test = _torchvision(cls, root, download, label)
    return Decoded(train.data.unsqueeze(1), train.targets.long(), test.data.unsqueeze(1), test.targets.long(),
                   len(train.classes))


@register_dataset("mnist")
def _mnist(root: Path, download: bool) -> Decoded:
    from torchvision.datasets import MNIST

    return _mnist_like(MNIST, root, download, "MNIST")


@register_dataset("kmnist")
def _kmnist(root: Path, download: bool) -> Decoded:
    from torchvision.datasets import KMNIST

    return _mnist_like(KMNIST, root, download, "KMNIST")


@register_dataset("fashion-mnist")
def _fashion_mnist(root: Path, download: bool) -> Decoded:
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    if DEBIAN_FASHION_MNIST.is_dir():  # Debian ships the IDX files gzipped; torchvision reads them unpacked
        for gz in DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"):
            target = raw / gz.name[:-3]
            if not target.exists():
                raw.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".part")
                with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                tmp.replace(target)
    return _mnist_like(FashionMNIST, root, download, "Fashion-MNIST")


def _cifar(cls: type, root: Path, download: bool, label: str) -> Decoded:
    train, test = _torchvision(cls, root, download, label)

    def images(ds: Any) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))

    return Decoded(images(train), torch.tensor(train.targets), images(test), torch.tensor(test.targets),
                   len(train.classes))


@register_dataset("cifar10")
def _cifar10(root: Path, download: bool) -> Decoded:
    from torchvision.datasets import CIFAR10

    return _cifar(CIFAR10, root, download, "CIFAR-10")


@register_dataset("cifar100")
def _cifar100(root: Path, download: bool) -> Decoded:
    from torchvision.datasets import CIFAR100

    return _cifar(CIFAR100, root, download, "CIFAR-100")


@register_dataset("digits")
def _digits(root: Path, download: bool) -> Decoded:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    # No official test split: a fixed 20% (seed 0), the same for every run anywhere.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return Decoded(x[train], y[train], x[test], y[test], 10)
