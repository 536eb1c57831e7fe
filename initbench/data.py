"""Datasets decoded once into in-memory tensors and served by slicing shuffled indices.

MNIST, Fashion-MNIST and CIFAR-10 are read by torchvision's own dataset classes (which download
them on a networked machine); Fashion-MNIST also comes from Debian's `dataset-fashion-mnist`
package, and `digits` (scikit-learn's bundled 8x8 set) works anywhere, offline.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from initbench.errors import InitbenchError
from initbench.plugins import entry_point_group, find

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
OFFLINE_HINT = ("offline alternatives: --dataset digits (bundled), or --dataset fashion-mnist after "
                "`apt-get install dataset-fashion-mnist` (Debian)")


def default_data_dir() -> Path:
    return Path(os.environ.get("INITBENCH_DATA_DIR", Path.home() / ".cache" / "initbench" / "data"))


@dataclass
class Decoded:
    """A dataset's train and test splits as uint8/float tensors (N, C, H, W) and int64 labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int


_LOADERS: dict[str, Callable[[Path, bool], Decoded]] = {}
DATASET_GROUP = "initbench.datasets"
_CACHE: dict[tuple[str, str], Decoded] = {}


def register_dataset(name: str) -> Callable[[Callable[[Path, bool], Decoded]], Callable[[Path, bool], Decoded]]:
    def decorator(fn: Callable[[Path, bool], Decoded]) -> Callable[[Path, bool], Decoded]:
        _LOADERS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Built-in datasets and those installed under the `initbench.datasets` entry-point group."""
    return sorted({*_LOADERS, *entry_point_group(DATASET_GROUP)[0]})


def _loader(name: str) -> Callable[[Path, bool], Decoded]:
    if name in _LOADERS:
        return _LOADERS[name]
    fn = find(name, "dataset", DATASET_GROUP, _LOADERS)
    if not callable(fn):
        raise InitbenchError(f"dataset '{name}' is not callable: it must be a function returning "
                             f"(x_train, y_train, x_test, y_test) or (train, test) datasets")
    from initbench.user_data import user_dataset

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


def _torchvision(cls: type, root: Path, download: bool, label: str) -> tuple:
    """Load both splits through torchvision; a failed or impossible download is one clear error."""
    splits = []
    for train in (True, False):
        try:
            splits.append(cls(str(root), train=train, download=False))
        except RuntimeError:
            if not download:
                raise InitbenchError(f"{label} not found in {root} (download disabled); {OFFLINE_HINT}") from None
            try:  # torchvision prints its attempts; keep the terminal to our one line
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    splits.append(cls(str(root), train=train, download=True))
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InitbenchError(
                    f"{label} not found in {root} and the download failed ({reason}); {OFFLINE_HINT}"
                ) from None
    return tuple(splits)


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


class TensorBatches:
    """Batches of (x, y) sliced from in-memory tensors; reshuffled each epoch from (seed, epoch).

    With `steps` > 1 each item holds up to that many consecutive batches of `batch_size` as one (x, y) slice (never
    across an epoch's end), which the training module splits and steps through: Lightning's fixed cost per batch
    is then paid once per `steps` optimizer steps. The batches and their order are the same for any `steps`.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool, seed: int = 0, steps: int = 1) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.steps = steps
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps (batches of `batch_size`) in one epoch."""
        return -(-len(self.y) // self.batch_size)

    def __len__(self) -> int:
        return -(-self.steps_per_epoch // self.steps)

    def _order(self, epoch: int) -> Tensor:
        return torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def first(self) -> tuple[Tensor, Tensor]:
        """The first batch of the first epoch (what training starts on), without gathering the epoch."""
        idx = self._order(0)[: self.batch_size] if self.shuffle else slice(0, self.batch_size)
        return self.x[idx], self.y[idx]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shuffle:
            order = self._order(self.epoch)
            self.epoch += 1
            x, y = self.x[order], self.y[order]  # one gather per epoch, then contiguous slices
        else:
            x, y = self.x, self.y
        size = self.batch_size * self.steps
        for i in range(0, len(y), size):
            yield x[i : i + size], y[i : i + size]


# Optimizer steps per training batch Lightning sees (see TensorBatches): its loop, hooks and wrappers cost about
# 0.2 ms per batch here, a fifth of a small MLP's step; paid once per 64 steps it is under 0.5%. Large batches,
# whose steps take long anyway, put fewer steps in one, so that one stays under EXAMPLES_PER_BATCH examples (the
# slice a GPU run copies to the device at once).
STEPS_PER_BATCH = 64
EXAMPLES_PER_BATCH = 16384


def val_count(pool: int, val_fraction: float) -> int:
    """How many of the training pool's examples the validation split takes."""
    return max(1, round(pool * val_fraction))


def check_limits(name: str, d: Decoded, val_fraction: float, limits: tuple[int | None, ...]) -> None:
    """--limit-train/val/test within what each split of the dataset holds (a sweep checks before its first run)."""
    n_val = val_count(len(d.y_train), val_fraction)
    for flag, limit, available in (("--limit-train", limits[0], len(d.y_train) - n_val),
                                   ("--limit-val", limits[1], n_val), ("--limit-test", limits[2], len(d.y_test))):
        if limit is not None and limit > available:
            raise InitbenchError(f"{flag} {limit} is more than the {available} examples {name} has there")


class TensorDataModule(L.LightningDataModule):
    """One dataset split into train/val (own seed) and test, normalised per channel, served from memory."""

    def __init__(self, name: str, batch_size: int = 128, data_seed: int = 0, split_seed: int = 0,
                 val_fraction: float = 0.1, limit_train: int | None = None, limit_val: int | None = None,
                 limit_test: int | None = None, data_dir: Path | None = None, download: bool = True) -> None:
        super().__init__()
        check_dataset(name)
        if batch_size < 1:
            raise InitbenchError(f"batch size must be at least 1, got {batch_size}")
        if not 0 < val_fraction < 1:
            raise InitbenchError(f"val fraction must be between 0 and 1, got {val_fraction}")
        for flag, value in (("--limit-train", limit_train), ("--limit-val", limit_val), ("--limit-test", limit_test)):
            if value is not None and value < 1:
                raise InitbenchError(f"{flag} must be at least 1, got {value}")
        self.name, self.batch_size, self.data_seed, self.split_seed = name, batch_size, data_seed, split_seed
        self.val_fraction, self.data_dir, self.download = val_fraction, data_dir, download
        self.limits = (limit_train, limit_val, limit_test)
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = decode(self.name, self.data_dir, self.download)
        check_limits(self.name, d, self.val_fraction, self.limits)
        perm = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = val_count(len(perm), self.val_fraction)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        limit_train, limit_val, limit_test = self.limits
        train_idx, val_idx = train_idx[:limit_train], val_idx[:limit_val]
        x_train = d.x_train[train_idx].float()
        # Normalise with the training split's own per-channel statistics.
        self.mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        self.std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.x_train, self.y_train = self._norm(x_train), d.y_train[train_idx]
        self.x_val, self.y_val = self._norm(d.x_train[val_idx].float()), d.y_train[val_idx]
        self.x_test, self.y_test = self._norm(d.x_test[:limit_test].float()), d.y_test[:limit_test]
        self.num_classes = d.num_classes
        self.input_shape = tuple(self.x_train.shape[1:])
        self._ready = True

    def _norm(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std).contiguous()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def sample(self, n: int, seed: int) -> Tensor:
        """n training inputs drawn with `seed`: the batch a data-dependent init (LSUV) sees."""
        idx = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(seed))[:n]
        return self.x_train[idx]

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.y_train) // self.batch_size)

    def train_dataloader(self) -> TensorBatches:
        steps = max(1, min(STEPS_PER_BATCH, EXAMPLES_PER_BATCH // self.batch_size))
        return TensorBatches(self.x_train, self.y_train, self.batch_size, shuffle=True, seed=self.data_seed,
                             steps=steps)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x_val, self.y_val, max(self.batch_size, 512), shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x_test, self.y_test, max(self.batch_size, 512), shuffle=False)
