"""RunSpec -> one training run -> a run record on disk."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import platform
import re
import shutil
import signal
import sys
import time
import traceback
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.connector import _PRECISION_INPUT_STR
from lightning.pytorch.loggers import CSVLogger

from initbench import __version__
from initbench.data import TensorDataModule, check_dataset
from initbench.errors import InitbenchError, RunBusy
from initbench.inits import Manifest, apply_init, canonical_init, parse_init, resolve_init
from initbench.models import build_model, check_model
from initbench.module import OPTIMIZERS, SCHEDULES, Classifier
from initbench.monitor import NormMonitor, Throughput, chance_accuracy, collapsed
from initbench.results import CONFIG, MANIFEST, METRICS, SUMMARY, RunLock, is_complete, write_json
from initbench.spec import format_call, parse_call

LSUV_BATCH = 512
LOGGERS = ("csv", "wandb")
PRECISIONS = typing.get_args(_PRECISION_INPUT_STR)
DEFAULT_DATASET = {"simplecnn": "cifar10", "mlp": "mnist"}  # when --dataset is not given


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run. Its stable hash (`run_id`) keys the record on disk."""

    model: str = "mlp"
    init: str = "kaiming_normal"
    dataset: str = "digits"
    seed: int = 0
    init_seed: int | None = None  # default: seed
    data_seed: int | None = None  # default: seed; shared across inits within a seed -> paired comparisons
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    batch_size: int = 128
    epochs: int = 5
    max_steps: int | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    limit_test: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    precision: str = "32-true"
    log_every: int = 20
    loggers: tuple[str, ...] = field(default=("csv",), compare=False)
    experiment: str = field(default="adhoc", compare=False)
    wandb_project: str = field(default="initbench", compare=False)
    wandb_entity: str | None = field(default=None, compare=False)

    @property
    def seeds(self) -> tuple[int, int]:
        return (self.seed if self.init_seed is None else self.init_seed,
                self.seed if self.data_seed is None else self.data_seed)

    def identity(self) -> dict[str, Any]:
        """The fields that change the result (loggers and the experiment's name do not), in one spelling:
        the canonical init (`normal(std=1.0)` == `normal`), float settings as floats, and a derived seed equal
        to `seed` left out, so every way of writing the same run is one run."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        d["init"] = canonical_init(d["init"])
        for name, (kind, *_) in _FIELDS.items():
            if kind is float and isinstance(d[name], int) and not isinstance(d[name], bool):
                d[name] = float(d[name])
        for derived in ("init_seed", "data_seed"):
            if d[derived] == d["seed"]:
                d[derived] = None
        return d

    @classmethod
    def from_record(cls, spec: Mapping[str, Any]) -> RunSpec:
        """The RunSpec a record's config.json stored (unknown keys from other versions ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in spec.items() if k in known}
        if isinstance(given.get("loggers"), list):
            given["loggers"] = tuple(given["loggers"])
        return cls(**given)

    @property
    def run_id(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        init = parse_init(self.init)
        rules = "+rules" if init.params.get("rules") else ""
        return _path_safe(f"{init.name}{rules}-seed{self.seed}-{self.run_id[:8]}")

    @property
    def problem(self) -> str:
        """DeepOBS-style problem name, <dataset>_<model spec>: model variants are different problems."""
        return f"{self.dataset}_{format_call(*parse_call(self.model, 'model'))}"

    @property
    def folder(self) -> str:
        """The problem's folder under the results dir: <dataset>_<model name> (runs inside are hashed)."""
        return _path_safe(f"{self.dataset}_{parse_call(self.model, 'model')[0]}")

    def validate(self) -> None:
        """Check names and numbers before any work or any file is written."""
        for f in dataclasses.fields(self):
            if f.compare:
                _check_field(f.name, getattr(self, f.name))
        check_dataset(self.dataset)
        parse_call(self.model, "model")
        resolve_init(self.init)  # the scheme, its parameters, fallback and rules
        check_model(self.model)
        if self.optimizer not in OPTIMIZERS:
            raise InitbenchError(f"unknown optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise InitbenchError(f"unknown schedule '{self.schedule}'; valid: {', '.join(SCHEDULES)}")
        if str(self.devices) not in ("auto", "1"):
            raise InitbenchError(f"devices must be auto or 1, got {self.devices!r}: initbench trains each run on one "
                                 f"device; to use several, run sweep shards side by side (--shard i/N)")
        if self.precision not in PRECISIONS:
            raise InitbenchError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        unknown = [lg for lg in self.loggers if lg not in LOGGERS]
        if unknown:
            raise InitbenchError(f"unknown logger '{unknown[0]}'; valid: {', '.join(LOGGERS)}")
        _check_trainer(self.accelerator, self.precision)


SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32: torch's generators and the data order's arithmetic stay exact
# field -> (type, lowest, highest, whether the highest is excluded, how messages name it)
_FIELDS: dict[str, tuple[type, float | None, float | None, bool, str]] = {
    "seed": (int, 0, SEED_LIMIT, True, "seed"), "init_seed": (int, 0, SEED_LIMIT, True, "init seed"),
    "data_seed": (int, 0, SEED_LIMIT, True, "data seed"), "split_seed": (int, 0, SEED_LIMIT, True, "split seed"),
    "lr": (float, 0, None, False, "learning rate (lr)"), "momentum": (float, 0, 1, True, "momentum"),
    "weight_decay": (float, 0, None, False, "weight decay (weight_decay)"),
    "val_fraction": (float, 0, 1, True, "val fraction (val_fraction)"),
    "batch_size": (int, 1, None, False, "batch size (batch_size)"), "epochs": (int, 1, None, False, "epochs"),
    "max_steps": (int, 1, None, False, "max steps (max_steps)"),
    "log_every": (int, 1, None, False, "log every (log_every)"),
    "limit_train": (int, 1, None, False, "--limit-train"), "limit_val": (int, 1, None, False, "--limit-val"),
    "limit_test": (int, 1, None, False, "--limit-test"),
    **{k: (str, None, None, False, k) for k in ("model", "dataset", "optimizer", "schedule", "accelerator",
                                                  "precision")},
}


def _check_field(name: str, value: Any) -> None:
    """One setting's type and range; None is allowed where the field is optional (limits, derived seeds)."""
    kind, low, high, open_high, label = _FIELDS.get(name, (object, None, None, False, name))
    if value is None and getattr(RunSpec, name, 0) is None:
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InitbenchError(f"{label} must be a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InitbenchError(f"{label} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InitbenchError(f"{label} must be finite, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise InitbenchError(f"{label} must be a name, got {value!r}")
    if name == "lr" and value <= 0:
        raise InitbenchError(f"learning rate (lr) must be positive, got {value}")
    if name == "val_fraction" and value <= 0:
        raise InitbenchError(f"val fraction (val_fraction) must be above 0, got {value}")
    if low is not None and value < low:
        raise InitbenchError(f"{label} must be at least {low}, got {value}")
    if high is not None and (value >= high if open_high else value > high):
        raise InitbenchError(f"{label} must be {'below' if open_high else 'at most'} {high}, got {value}")


def _path_safe(name: str) -> str:
    """A file name from a name that may be an import path (`mypkg.models:build` -> `mypkg.models-build`)."""
    return re.sub(r"[^\w.+-]+", "-", name)


@dataclass
class Prepared:
    """A run ready to train: its data, the initialised model inside its LightningModule, the manifest."""

    spec: RunSpec
    data: TensorDataModule
    module: Classifier
    manifest: Manifest


def prepare(spec: RunSpec, data_dir: Path | None = None, download: bool = True) -> Prepared:
    """Seed, load data, build the model for the data's shape and apply the init (no files written)."""
    spec.validate()
    init_seed, data_seed = spec.seeds
    data = TensorDataModule(spec.dataset, spec.batch_size, data_seed, spec.split_seed, spec.val_fraction,
                            spec.limit_train, spec.limit_val, spec.limit_test, data_dir, download)
    data.setup()
    torch.manual_seed(init_seed)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    batch = data.sample(min(LSUV_BATCH, len(data.y_train)), init_seed)
    manifest = apply_init(model, spec.init, data=batch)
    for warning in manifest.warnings:
        _warn_once(warning)
    module = Classifier(model, data.num_classes, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay,
                        spec.schedule, spec.log_every)
    return Prepared(spec, data, module, manifest)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A manifest warning goes to stderr once per process, however many runs of a sweep share it."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"initbench: {message}", file=sys.stderr)


@functools.cache
def _check_trainer(accelerator: str, precision: str) -> None:
    """Lightning accepts this accelerator and precision here (one trainer built per pair and process)."""
    make_trainer(RunSpec(accelerator=accelerator, precision=precision), [], [], progress=False)


def make_trainer(spec: RunSpec, callbacks: list[L.Callback], loggers: list[Any], progress: bool,
                 validate: bool = True) -> L.Trainer:
    """The Lightning Trainer for a run; settings Lightning rejects (accelerator, devices, precision) are
    one InitbenchError."""
    _quiet_lightning()
    try:
        return _trainer(spec, callbacks, loggers, progress, validate)
    except Exception as exc:  # building a Trainer does no training: whatever fails here is a setting
        message = " ".join(str(exc).split())
        raise InitbenchError(f"bad trainer settings (accelerator {spec.accelerator!r}, devices {spec.devices!r}, "
                             f"precision {spec.precision!r}): {message}") from None


def _trainer(spec: RunSpec, callbacks: list[L.Callback], loggers: list[Any], progress: bool,
             validate: bool) -> L.Trainer:
    return L.Trainer(
        accelerator=spec.accelerator,
        devices=1,  # one device per run (validate() refuses more): on a multi-GPU machine "auto" would start DDP
        precision=spec.precision,
        max_epochs=spec.epochs,
        max_steps=spec.max_steps or -1,
        logger=loggers or False,
        callbacks=callbacks,
        log_every_n_steps=spec.log_every,  # step metrics go to the loggers directly (Classifier.log_step)
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
    )


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _device(trainer: L.Trainer) -> str:
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(root)}"
    return f"{root.type}: {platform.processor() or platform.machine()}"


def versions() -> dict[str, str]:
    import lightning
    import torchvision

    return {"initbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "lightning": lightning.__version__, "python": platform.python_version()}


def run_dir_for(spec: RunSpec, out: Path) -> Path:
    """Where a run's record is written: <out>/<dataset>_<model>/<init>-seed<seed>-<id>."""
    return Path(out) / spec.folder / spec.name


_RECORD_IDS: dict[Path, str | None] = {}  # a record folder -> the canonical id of the run it holds (read once)


def record_dir(spec: RunSpec, out: Path) -> Path:
    """The folder holding this run's record: its own, or one written under another spelling of the same run
    (e.g. by an earlier version whose ids were not canonical), so that no run is trained twice."""
    own = run_dir_for(spec, out)
    if own.exists() or not own.parent.is_dir():
        return own
    for entry in sorted(own.parent.iterdir()):
        if entry not in _RECORD_IDS and entry.is_dir():
            try:
                stored = json.loads((entry / CONFIG).read_text())["spec"]
                _RECORD_IDS[entry] = RunSpec.from_record(stored).run_id
            except (OSError, ValueError, KeyError, TypeError, InitbenchError):
                continue  # not (yet) a readable record: looked at again next time
        if _RECORD_IDS.get(entry) == spec.run_id:
            return entry
    return own


def run(spec: RunSpec, out: Path = Path("results"), *, progress: bool = True, data_dir: Path | None = None,
        download: bool = True) -> tuple[Path, dict[str, Any]]:
    """Train one run and write its record; a complete record already on disk is returned as is.

    The run's lock is held throughout: a run another process is training raises RunBusy, untouched.
    """
    run_dir, summary, outcome = claim_and_run(spec, out, progress=progress, data_dir=data_dir, download=download)
    if outcome == "busy":
        raise RunBusy(f"run {spec.run_id} is being trained by another process ({run_dir}); nothing was touched")
    return run_dir, summary


def claim_and_run(spec: RunSpec, out: Path, *, progress: bool = True, data_dir: Path | None = None,
                  download: bool = True, keep_going: bool = False) -> tuple[Path, dict[str, Any], str]:
    """(run dir, summary, outcome): outcome is `trained`, `done` (complete before, by anyone) or `busy`.

    With `keep_going` (a sweep), a run whose preparation fails after validation (a plug-in that
    raises, a layer LSUV cannot run) is recorded as failed instead of stopping the caller.
    """
    existing = record_dir(spec, out)
    if is_complete(existing):
        return existing, json.loads((existing / SUMMARY).read_text()), "done"
    run_dir = run_dir_for(spec, out)
    started = time.time()
    try:
        prepared: Prepared | BaseException = prepare(spec, data_dir, download)  # bad input: before any file
    except InitbenchError as exc:
        if not keep_going:
            raise
        prepared = exc
    except Exception as exc:  # a library error, an out-of-memory: a result of this run, recorded
        prepared = exc
    lock = RunLock(run_dir)
    try:
        claimed = lock.acquire()
    except OSError as exc:
        raise InitbenchError(f"cannot write the run record to {run_dir}: {exc.strerror or exc}") from None
    if not claimed:
        return run_dir, {}, "busy"
    try:
        if is_complete(run_dir):  # finished by another process since we looked
            return run_dir, json.loads((run_dir / SUMMARY).read_text()), "done"
        if isinstance(prepared, BaseException):
            return run_dir, _record_failure(spec, run_dir, prepared, started), "trained"
        return run_dir, _train(prepared, out, run_dir, progress, started), "trained"
    finally:
        lock.release()


def _record_failure(spec: RunSpec, run_dir: Path, exc: BaseException, started: float) -> dict[str, Any]:
    """A run that failed before training: its record says so (config, then summary last)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_json(run_dir / CONFIG, {"run_id": spec.run_id, "spec": dataclasses.asdict(spec), "versions": versions(),
                                  "device": None})
    summary = {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": "".join(traceback.format_exception(exc, limit=5)),
               "wall_time_s": round(time.time() - started, 3)}
    write_json(run_dir / SUMMARY, summary)
    return summary


def _train(prepared: Prepared, out: Path, run_dir: Path, progress: bool, started: float) -> dict[str, Any]:
    spec = prepared.spec
    use_wandb = "wandb" in spec.loggers
    if use_wandb:
        from initbench import dashboards

        dashboards.check_settings(spec.wandb_project, dashboards.wandb_dir(out))
    _quiet_lightning()
    speed = Throughput()
    callbacks = [NormMonitor(spec.log_every), speed]
    trainer = make_trainer(spec, callbacks, [CSVLogger(run_dir, name="", version="")], progress)
    try:
        if run_dir.exists():  # an interrupted earlier attempt: start it over
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
    except OSError as exc:
        raise InitbenchError(f"cannot write the run record to {run_dir}: {exc.strerror or exc}") from None
    config = {
        "run_id": spec.run_id, "spec": dataclasses.asdict(spec), "versions": versions(), "device": _device(trainer),
        "data": {"dataset": spec.dataset, "input_shape": list(prepared.data.input_shape),
                 "num_classes": prepared.data.num_classes, **prepared.data.sizes()},
        "parameters": sum(p.numel() for p in prepared.module.model.parameters()),
    }
    write_json(run_dir / CONFIG, config)
    write_json(run_dir / MANIFEST, prepared.manifest.to_dict())
    if use_wandb:  # started once the record exists; the device it names comes from the trainer
        trainer.loggers = [*trainer.loggers, dashboards.train_logger(spec, out, prepared.manifest, config)]
    summary: dict[str, Any] = {"run_id": spec.run_id, "status": "ok"}
    torch.manual_seed(spec.seeds[1])  # any randomness inside training (e.g. dropout) follows the data seed
    try:
        trainer.validate(prepared.module, datamodule=prepared.data, verbose=False)  # the init's val acc, step 0
        trainer.fit(prepared.module, datamodule=prepared.data)
        test = trainer.test(prepared.module, datamodule=prepared.data, verbose=False)[0]
        summary.update({"test_loss": test.get("test/loss"), "test_acc": test.get("test/acc")})
    except Exception as exc:  # a crash inside training is a result too: recorded, not lost
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(limit=5))
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1); the run stays unfinished, rerun later
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    for logger in trainer.loggers:
        logger.finalize("success")
    if prepared.module.diverged_step is not None:
        summary.update(status="diverged", diverged_step=prepared.module.diverged_step)
    summary.update(_tidy_metrics(run_dir / METRICS))
    chance = chance_accuracy(prepared.data.y_val)
    if summary["status"] == "ok" and collapsed(summary.get("train_loss_final"), summary.get("val_acc_final"),
                                               prepared.data.num_classes, chance, len(prepared.data.y_val)):
        summary.update(status="collapsed", chance_acc=chance)
    summary.update(steps=trainer.global_step, epochs=trainer.current_epoch,
                   train_time_s=round(speed.seconds, 3), images_per_s=speed.images_per_s,
                   wall_time_s=round(time.time() - started, 3))
    write_json(run_dir / SUMMARY, summary)
    if use_wandb:
        dashboards.finish_train_logger(trainer.loggers[-1], summary)
    return summary


def _tidy_metrics(metrics_csv: Path) -> dict[str, Any]:
    """Merge Lightning's one-row-per-logging-call CSV into one row per step (written back atomically),
    and read the final/best validation accuracy and the final train loss from it."""
    import pandas as pd

    if not metrics_csv.exists():
        return {}
    df = pd.read_csv(metrics_csv).groupby("step", as_index=False, sort=True).first()
    cols = ["step", "epoch", *sorted(c for c in df.columns if c not in ("step", "epoch"))]
    tmp = metrics_csv.with_suffix(".tmp")
    df[cols].to_csv(tmp, index=False)
    tmp.replace(metrics_csv)
    out: dict[str, Any] = {}
    if "val/acc" in df:
        val = df.dropna(subset=["val/acc"])
        if len(val):
            best = val.loc[val["val/acc"].idxmax()]
            out.update(val_acc_final=float(val["val/acc"].iloc[-1]), best_val_acc=float(best["val/acc"]),
                       best_val_step=int(best["step"]))
    if "train/loss" in df:
        train = df.dropna(subset=["train/loss"])
        if len(train):
            out["train_loss_final"] = float(train["train/loss"].iloc[-1])
    return out
