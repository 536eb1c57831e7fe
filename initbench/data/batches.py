"""A dataset split into train/val/test, normalised, and served from memory in batches reshuffled each epoch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from initbench import datasets
from initbench.data.load import check_dataset, decode
from initbench.data.sources import Decoded
from initbench.datasets import train_steps, val_count
from initbench.errors import InitbenchError


class TensorBatches:
    """Batches of (x, y) sliced from in-memory tensors; reshuffled each epoch from (seed, epoch).

    With `steps` > 1 each item holds up to that many consecutive batches of `batch_size` as one (x, y) slice (never
    across an epoch's end), which the training module splits and steps through: Lightning's fixed cost per batch
    is then paid once per `steps` optimizer steps. The batches and their order are the same for any `steps`.
    Shuffled (training) batches are all full: an epoch's last few examples that do not fill a batch wait for the next
    epoch's order, so no step's loss and gradient rest on a handful of examples.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool, seed: int = 0, steps: int = 1) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.steps = steps
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps (batches of `batch_size`) in one epoch."""
        return train_steps(len(self.y), self.batch_size) if self.shuffle else -(-len(self.y) // self.batch_size)

    def __len__(self) -> int:
        return -(-self.steps_per_epoch // self.steps)

    def _order(self, epoch: int) -> Tensor:
        """The epoch's order, drawn on the CPU whatever device the data is on (the same order everywhere)."""
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return order.to(self.y.device)

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
        size, end = self.batch_size * self.steps, len(y)
        if self.shuffle:
            end = self.steps_per_epoch * self.batch_size
        for i in range(0, end, size):
            yield x[i : min(i + size, end)], y[i : min(i + size, end)]


# Optimizer steps per training batch Lightning sees (see TensorBatches): its loop, hooks and wrappers cost about
# 0.2 ms per batch here, a fifth of a small MLP's step; paid once per 64 steps it is under 0.5%. Large batches,
# whose steps take long anyway, put fewer steps in one, so that one stays under EXAMPLES_PER_BATCH examples (the
# slice a GPU run copies to the device at once).
STEPS_PER_BATCH = 64

EXAMPLES_PER_BATCH = 16384


def check_limits(name: str, d: Decoded, val_fraction: float, limits: tuple[int | None, ...],
                 batch_size: int = 1) -> None:
    """--limit-train/val/test and the batch size against the decoded dataset (a sweep checks before its first run)."""
    datasets.check_limits(name, len(d.y_train), len(d.y_test), val_fraction, limits, batch_size)


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
        if not self._ready:
            self._decode()
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else None
        if device is not None and device.type != "cpu" and self.x_train.device != device:
            self.to_device(device)

    def to_device(self, device: torch.device) -> None:
        """Every split moved to `device` once, for the whole run (no host-to-device copy per batch on a GPU)."""
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std"):
            setattr(self, name, getattr(self, name).to(device))

    def _decode(self) -> None:
        d = decode(self.name, self.data_dir, self.download)
        check_limits(self.name, d, self.val_fraction, self.limits, self.batch_size)
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
        return train_steps(len(self.y_train), self.batch_size)

    def train_dataloader(self) -> TensorBatches:
        steps = max(1, min(STEPS_PER_BATCH, EXAMPLES_PER_BATCH // self.batch_size))
        return TensorBatches(self.x_train, self.y_train, self.batch_size, shuffle=True, seed=self.data_seed,
                             steps=steps)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x_val, self.y_val, max(self.batch_size, 512), shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x_test, self.y_test, max(self.batch_size, 512), shuffle=False)
