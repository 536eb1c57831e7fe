"""Data: the datasets (sources), the user's own (user), a dataset by name decoded once (load), and the splits served
from memory in batches (batches)."""

from initbench.data.batches import (
    EXAMPLES_PER_BATCH,
    STEPS_PER_BATCH,
    TensorBatches,
    TensorDataModule,
    check_limits,
    val_count,
)
from initbench.data.load import check_dataset, decode
from initbench.data.sources import DATASETS, Decoded, list_datasets, register_dataset
from initbench.datasets import default_data_dir

__all__ = [
    "DATASETS", "EXAMPLES_PER_BATCH", "STEPS_PER_BATCH", "Decoded", "TensorBatches", "TensorDataModule",
    "check_dataset", "check_limits", "decode", "default_data_dir", "list_datasets", "register_dataset", "val_count",
]
