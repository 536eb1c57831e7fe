"""The Lightning Trainer a run or a lockstep group trains under, and what the record says of where it ran: the
device and the package versions. Settings Lightning rejects are one InitbenchError."""

from __future__ import annotations

import functools
import logging
import platform
import warnings
from typing import Any

import lightning as L
import torch

from initbench import __version__
from initbench.errors import InitbenchError
from initbench.spec import RunSpec, cores


def use_threads(threads: int | None) -> int:
    """Train with `threads` torch threads (None: one per core). A CPU run's numbers depend on the count in their last
    digits (a sum split over more threads rounds otherwise), so a study fixes it and its records say it."""
    threads = threads or cores()
    torch.set_num_threads(threads)
    return threads


def limit_threads() -> None:
    """Never more torch threads than the cores this process may use (oversubscribed cores slow every run tenfold)."""
    if torch.get_num_threads() > cores():
        torch.set_num_threads(cores())


@functools.cache
def check_trainer(accelerator: str, precision: str) -> None:
    """Lightning accepts this accelerator and precision here (one trainer built per pair and process)."""
    make_trainer(RunSpec(accelerator=accelerator, precision=precision), [], [], progress=False)


def make_trainer(spec: RunSpec, callbacks: list[L.Callback], loggers: list[Any], progress: bool,
                 validate: bool = True) -> L.Trainer:
    """The Lightning Trainer for a run; settings Lightning rejects (accelerator, devices, precision) are
    one InitbenchError."""
    quiet_lightning()
    try:
        return _trainer(spec, callbacks, loggers, progress, validate)
    except Exception as exc:  # building a Trainer does no training: whatever fails here is a setting
        message = " ".join(str(exc).split())
        raise InitbenchError(f"bad trainer settings (accelerator {spec.accelerator!r}, devices {spec.devices!r}, "
                             f"precision {spec.precision!r}): {message}") from None


# cuDNN picks deterministic kernels and never by timing (benchmark off), so the same command on the same GPU gives
# the same records; a CUDA record's device line says so.
CUDNN = "cudnn deterministic, benchmark off"


def _trainer(spec: RunSpec, callbacks: list[L.Callback], loggers: list[Any], progress: bool,
             validate: bool) -> L.Trainer:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # CUDNN
    return L.Trainer(
        accelerator=spec.accelerator,
        devices=1,  # one device per run (validate() refuses more): on a multi-GPU machine "auto" would start DDP
        precision=spec.precision,
        max_epochs=spec.epochs,
        max_steps=spec.max_steps or -1,
        logger=loggers or False,
        callbacks=callbacks,
        log_every_n_steps=1,  # unused: step metrics go to the loggers directly (module.log_metrics)
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
    )


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def device_name(trainer: L.Trainer) -> str:
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(root)} ({CUDNN})"
    return f"{root.type}: {cpu_name()}"


@functools.cache
def cpu_name() -> str:
    """The CPU's model and architecture (`AMD EPYC (x86_64)`): a record made on another kind of CPU may round
    otherwise, and `initbench verify` says so."""
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    model = model or platform.processor()
    return f"{model} ({platform.machine()})" if model else platform.machine()


def versions() -> dict[str, str]:
    import lightning
    import torchvision

    return {"initbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightning": lightning.__version__, "python": platform.python_version()}
