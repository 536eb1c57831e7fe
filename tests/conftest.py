"""Shrink every run: tiny subsets, CPU, no network, data written in the real on-disk formats."""

import hashlib
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from initbench.spec import RunSpec

# Never touch the user's cache; each test session gets its own data folder, removed when the session ends.
DATA_DIR = tempfile.mkdtemp(prefix="initbench-data-")
os.environ["INITBENCH_DATA_DIR"] = DATA_DIR
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(DATA_DIR, ignore_errors=True)


def tiny(**overrides) -> RunSpec:
    """A run that takes a second or two on a CPU."""
    base = dict(dataset="digits", model="mlp(hidden=[32])", epochs=2, batch_size=64, limit_train=256,
                limit_val=128, limit_test=128, accelerator="cpu", log_every=2)
    return RunSpec(**{**base, **overrides})


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format MNIST ships in: magic (0, 0, dtype 0x08, ndim), big-endian dims, raw uint8."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _images_with_signal(rng: np.random.Generator, n: int, shape: tuple, classes: int = 10):
    """Random images whose mean brightness encodes the label, so a model can learn something."""
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 100, (n, *shape)) + labels.reshape(-1, *[1] * len(shape)) * 15
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 1000), ("t10k", 200)):
        images, labels = _images_with_signal(rng, n, (28, 28))
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def pickle_with_md5(folder: Path, name: str, obj: dict) -> list[str]:
    """Write one CIFAR-style pickle; [name, md5], the entry torchvision's checksum tables hold."""
    (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]


@pytest.fixture
def cifar10_dir(tmp_path_factory, monkeypatch) -> Path:
    """CIFAR-10's python pickles (5 train batches, test batch, meta); torchvision checks their md5,
    so the class's checksum table is pointed at these files' checksums."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / CIFAR10.base_folder
    folder.mkdir()
    rng = np.random.default_rng(1)

    def dump(name: str, obj: dict) -> list[str]:
        return pickle_with_md5(folder, name, obj)

    def batch(name: str, n: int) -> list[str]:
        images, labels = _images_with_signal(rng, n, (3, 32, 32))
        return dump(name, {"data": images.reshape(n, -1), "labels": labels.tolist()})

    train = [batch(f"data_batch_{i}", 200) for i in range(1, 6)]
    test = [batch("test_batch", 200)]
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta_md5 = dump("batches.meta", {"label_names": names})[1]
    monkeypatch.setattr(CIFAR10, "train_list", train)
    monkeypatch.setattr(CIFAR10, "test_list", test)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": meta_md5})
    return root


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    assert FASHION_MNIST_DEBIAN.exists(), "make test installs Debian's dataset-fashion-mnist"
    return Path(os.environ["INITBENCH_DATA_DIR"])


@pytest.fixture
def tiny_spec():
    return tiny
