"""The built-in datasets as facts known without torch: their sizes, where their files lie under the data folder,
and the checks those facts allow (limits, batch size, files present when nothing may be downloaded), so such input
is refused before torch loads. A test keeps the facts equal to what each dataset decodes to."""

from __future__ import annotations

import os
from pathlib import Path

from initbench.errors import InitbenchError

OFFLINE_HINT = ("offline alternatives: --dataset digits (bundled), or --dataset fashion-mnist after "
                "`apt-get install dataset-fashion-mnist` (Debian)")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# The built-in datasets' sizes, (training pool, test split), so limits and the batch size are checked before torch
# loads; a test keeps them equal to what each dataset decodes to.
DATASET_SIZES = {"digits": (1438, 359), "mnist": (60000, 10000), "kmnist": (60000, 10000),
                 "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000)}


def train_steps(examples: int, batch_size: int) -> int:
    """Optimizer steps in one training epoch: full batches only (the short last one is left out, see
    `data.TensorBatches`); a split smaller than one batch is refused before training (`check_limits`)."""
    return examples // batch_size


def val_count(pool: int, val_fraction: float) -> int:
    """How many of the training pool's examples the validation split takes."""
    return max(1, round(pool * val_fraction))


def check_limits(name: str, pool: int, n_test: int, val_fraction: float, limits: tuple[int | None, ...],
                 batch_size: int = 1) -> None:
    """--limit-train/val/test within what each split of the dataset holds (a training pool of `pool` examples, a
    test split of `n_test`), and a training split of at least one batch."""
    n_val = val_count(pool, val_fraction)
    for flag, limit, available in (("--limit-train", limits[0], pool - n_val),
                                   ("--limit-val", limits[1], n_val), ("--limit-test", limits[2], n_test)):
        if limit is not None and limit > available:
            raise InitbenchError(f"{flag} {limit} is more than the {available} examples {name} has there")
    train = limits[0] or pool - n_val
    if train < batch_size:
        given = f"--limit-train {limits[0]}" if limits[0] else f"--val-fraction {val_fraction:g}"
        raise InitbenchError(f"{given} leaves {train} training example{'s' * (train != 1)} of {name}, fewer than one "
                             f"batch ({batch_size}): lower --batch-size" + ("" if limits[0] else " or --val-fraction"))


# name -> (label, the folder torchvision keeps its files in under the data folder); digits is bundled
FOLDERS = {"mnist": ("MNIST", "MNIST"), "kmnist": ("KMNIST", "KMNIST"),
           "fashion-mnist": ("Fashion-MNIST", "FashionMNIST"),
           "cifar10": ("CIFAR-10", "cifar-10-batches-py"), "cifar100": ("CIFAR-100", "cifar-100-python")}


def default_data_dir() -> Path:
    """Where datasets are kept: $INITBENCH_DATA_DIR, else ~/.cache/initbench/data."""
    return Path(os.environ.get("INITBENCH_DATA_DIR") or Path.home() / ".cache" / "initbench" / "data")


def check_files(name: str, data_dir: Path | None) -> None:
    """With downloads off, a built-in dataset whose folder is not there is refused at once (its files' contents are
    torchvision's own check, later)."""
    if name not in FOLDERS or (name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir()):
        return
    label, folder = FOLDERS[name]
    root = data_dir or default_data_dir()
    if not (root / folder).is_dir():
        raise InitbenchError(f"{label} not found in {root} (download disabled); {OFFLINE_HINT}")
