"""Data: the datasets (sources), the user's own (user), a dataset by name decoded once (load), and the splits served
from memory in batches (batches, which loads Lightning: imported when first asked for, so that checking a dataset's
name or the user's dataset code does not load it)."""

from typing import Any

from initbench.data.load import check_dataset, decode
from initbench.data.sources import DATASETS, Decoded, list_datasets, register_dataset
from initbench.datasets import default_data_dir, val_count

_BATCHES = ("EXAMPLES_PER_BATCH", "STEPS_PER_BATCH", "TensorBatches", "TensorDataModule", "check_limits")

__all__ = [
    "DATASETS", "Decoded", "check_dataset", "decode", "default_data_dir", "list_datasets", "register_dataset",
    "val_count", *_BATCHES,
]


def __getattr__(name: str) -> Any:
    if name in _BATCHES:
        from initbench.data import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'initbench.data' has no attribute {name!r}")
