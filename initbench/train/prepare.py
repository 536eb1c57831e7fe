"""A run made ready to train: seeded, its data loaded, its model built for the data's shape and initialised, and its
step-0 diagnostics taken (no files written)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from initbench.data import TensorDataModule
from initbench.inits import Manifest, apply_init
from initbench.models import build_model
from initbench.spec import RunSpec
from initbench.train.diagnostics import step0
from initbench.train.module import Classifier
from initbench.train.trainer import check_trainer, limit_threads

LSUV_BATCH = 512


@dataclass
class Prepared:
    """A run ready to train: its data, the initialised model inside its LightningModule, the manifest."""

    spec: RunSpec
    data: TensorDataModule
    module: Classifier
    manifest: Manifest
    diagnostics: dict[str, Any] = field(default_factory=dict)  # step 0's (diagnostics.step0)

    def facts(self) -> dict[str, Any]:
        """What its record's config says of the run's data and model (`record.run_config`)."""
        return {"data": {"dataset": self.spec.dataset, "input_shape": list(self.data.input_shape),
                         "num_classes": self.data.num_classes, **self.data.sizes()},
                "parameters": sum(p.numel() for p in self.module.model.parameters()),
                "threads": torch.get_num_threads()}  # a CPU run's numbers depend on it (in the last digits)


def prepare(spec: RunSpec, data_dir: Path | None = None, download: bool = True,
            data: TensorDataModule | None = None, diagnose: bool = True) -> Prepared:
    """Seed, load data, build the model for the data's shape and apply the init (no files written). `data`, when
    given, is a data module of a run with the same data settings (a lockstep group shares one). With `diagnose`, the
    step-0 diagnostics its record will hold (callers that write no record leave them out)."""
    spec.validate()
    check_trainer(spec.accelerator, spec.precision)  # Lightning accepts them here (once per pair and process)
    limit_threads()
    init_seed, data_seed = spec.seeds
    if data is None:
        data = TensorDataModule(spec.dataset, spec.batch_size, data_seed, spec.split_seed, spec.val_fraction,
                                spec.limit_train, spec.limit_val, spec.limit_test, data_dir, download)
        data.setup()
    torch.manual_seed(init_seed)
    model = build_model(spec.model_call, data.input_shape, data.num_classes)
    batch = data.sample(min(LSUV_BATCH, len(data.y_train)), init_seed)
    manifest = apply_init(model, spec.init_spec, data=batch)
    for warning in manifest.warnings:
        _warn_once(warning)
    module = Classifier(model, data.num_classes, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay,
                        spec.schedule, spec.log_every)
    diagnostics = step0(model, *data.train_dataloader().first()) if diagnose else {}  # on training's first batch
    return Prepared(spec, data, module, manifest, diagnostics)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A manifest warning goes to stderr once per process, however many runs of a sweep share it."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"initbench: {message}", file=sys.stderr)
