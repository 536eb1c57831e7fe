"""RunSpec -> one training run -> a run record on disk (claimed with the run's lock, written atomically)."""

from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from initbench import __version__
from initbench.data import TensorDataModule
from initbench.errors import InitbenchError, RunBusy
from initbench.inits import Manifest, apply_init
from initbench.models import build_model
from initbench.record import RunRecord
from initbench.results import Claims, RunLock
from initbench.spec import RunSpec
from initbench.train.diagnostics import step0
from initbench.train.module import Classifier
from initbench.train.monitor import RunBar, StepReport, Throughput, chance_accuracy, collapsed

LSUV_BATCH = 512


@dataclass
class Prepared:
    """A run ready to train: its data, the initialised model inside its LightningModule, the manifest."""

    spec: RunSpec
    data: TensorDataModule
    module: Classifier
    manifest: Manifest
    diagnostics: dict[str, Any] = field(default_factory=dict)  # step 0's (diagnostics.step0)


def prepare(spec: RunSpec, data_dir: Path | None = None, download: bool = True,
            data: TensorDataModule | None = None, diagnose: bool = True) -> Prepared:
    """Seed, load data, build the model for the data's shape and apply the init (no files written). `data`, when
    given, is a data module of a run with the same data settings (a lockstep group shares one). With `diagnose`, the
    step-0 diagnostics its record will hold (callers that write no record leave them out)."""
    spec.validate()
    limit_threads()
    init_seed, data_seed = spec.seeds
    if data is None:
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
    diagnostics = step0(model, *data.train_dataloader().first()) if diagnose else {}  # on training's first batch
    return Prepared(spec, data, module, manifest, diagnostics)


def limit_threads() -> None:
    """Never more torch threads than the cores this process may use (oversubscribed cores slow every run tenfold)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.get_num_threads() > allowed:
        torch.set_num_threads(allowed)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A manifest warning goes to stderr once per process, however many runs of a sweep share it."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"initbench: {message}", file=sys.stderr)


@functools.cache
def check_trainer(accelerator: str, precision: str) -> None:
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
        log_every_n_steps=spec.log_every,  # step metrics go to the loggers directly (module.log_metrics)
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
        if entry.name.startswith("."):  # locks, and a forced rerun's record before it is swapped in
            continue
        if entry not in _RECORD_IDS and entry.is_dir():
            try:
                stored = RunRecord(entry).config()["spec"]
                _RECORD_IDS[entry] = RunSpec.from_record(stored).run_id
            except (OSError, ValueError, KeyError, TypeError, InitbenchError):
                continue  # not (yet) a readable record: looked at again next time
        if _RECORD_IDS.get(entry) == spec.run_id:
            return entry
    return own


def run(spec: RunSpec, out: Path = Path("results"), *, progress: bool = True, data_dir: Path | None = None,
        download: bool = True, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Train one run and write its record; a complete record already on disk is returned as is.

    The run's lock is held throughout: a run another process is training raises RunBusy, untouched.
    """
    run_dir, summary, outcome = claim_and_run(spec, out, progress=progress, data_dir=data_dir, download=download,
                                              force=force)
    refuse_busy(spec, run_dir, outcome)
    return run_dir, summary


def refuse_busy(spec: RunSpec, run_dir: Path, outcome: str) -> None:
    """A run another process holds is an error for whoever asked for that one run."""
    if outcome == "busy":
        raise RunBusy(f"run {spec.run_id} is being trained by another process ({run_dir}); nothing was touched")


def claim_and_run(spec: RunSpec, out: Path, *, progress: bool = True, data_dir: Path | None = None,
                  download: bool = True, keep_going: bool = False, force: bool = False,
                  on_step: Callable[[int], None] | None = None) -> tuple[Path, dict[str, Any], str]:
    """(run dir, summary, outcome): outcome is `trained`, `done` (complete before, by anyone) or `busy`.

    With `keep_going` (a sweep), a run whose preparation fails after validation (a plug-in that
    raises, a layer LSUV cannot run) is recorded as failed instead of stopping the caller. With
    `force`, a complete run is trained again; its old record is replaced only once the new one is whole.
    `on_step(global_step)` is called after every training step.
    """
    existing = RunRecord(record_dir(spec, out))
    if existing.complete and not force:
        return existing.path, existing.summary(), "done"
    run_dir = run_dir_for(spec, out)
    started = time.time()
    prepared = _prepare_or_error(spec, data_dir, download, keep_going)  # bad input: before any file
    claims = Claims()
    try:
        if _claim(claims, run_dir) is None:
            return run_dir, {}, "busy"
        existing = RunRecord(record_dir(spec, out))
        replace = force and existing.complete
        if existing.complete and not replace:  # finished by another process since we looked
            return existing.path, existing.summary(), "done"
        target = run_dir.with_name(f".{run_dir.name}.new-{os.getpid()}") if replace else run_dir
        if isinstance(prepared, BaseException):
            summary = _record_failure(spec, target, prepared, started)
        else:
            summary = _train(prepared, out, target, progress, started, on_step)
        if replace:  # the new record is whole: swap it in, then drop the old one
            old = existing.path.with_name(f".{existing.path.name}.old-{os.getpid()}")
            os.rename(existing.path, old)
            os.rename(target, run_dir)
            shutil.rmtree(old)
        return run_dir, summary, "trained"
    finally:
        claims.release()


def _prepare_or_error(spec: RunSpec, data_dir: Path | None, download: bool, keep_going: bool,
                      data: TensorDataModule | None = None) -> Prepared | BaseException:
    """The prepared run, or the error to record as its failure: bad input (InitbenchError) raises unless
    `keep_going`; a library error or an out-of-memory is a result of the run."""
    try:
        return prepare(spec, data_dir, download, data)
    except InitbenchError as exc:
        if not keep_going:
            raise
        return exc
    except Exception as exc:
        return exc


def _claim(claims: Claims, run_dir: Path) -> RunLock | None:
    """The run's lock, held in `claims`, or None when another process holds it."""
    try:
        return claims.take(run_dir)
    except OSError as exc:
        raise InitbenchError(f"cannot write the run record to {run_dir}: {exc.strerror or exc}") from None


def claim_and_run_group(specs: list[RunSpec], out: Path, *, progress: bool = True, data_dir: Path | None = None,
                        download: bool = True, on_step: Callable[[int], None] | None = None,
                        note: Callable[[str], None] = print,
                        keep_going: bool = False) -> list[tuple[RunSpec, Path, dict[str, Any], str]]:
    """Runs that share everything but the init, trained as one lockstep group where the model allows (else one by
    one, with a one-line `note` saying why): [(spec, run dir, summary, outcome)] in the given order, outcomes as
    `claim_and_run`'s. Complete and busy runs are left alone. With `keep_going` (a sweep), a run whose preparation
    fails is recorded as failed; without, bad input raises as it does for `claim_and_run`."""
    from initbench.train import lockstep

    results: dict[str, tuple[RunSpec, Path, dict[str, Any], str]] = {}
    members, claims = [], Claims()
    started = time.time()
    try:
        for spec in specs:
            existing = RunRecord(record_dir(spec, out))
            run_dir = run_dir_for(spec, out)
            if existing.complete:
                results[spec.run_id] = (spec, existing.path, existing.summary(), "done")
                continue
            if _claim(claims, run_dir) is None:
                results[spec.run_id] = (spec, run_dir, {}, "busy")
                continue
            existing = RunRecord(record_dir(spec, out))
            if existing.complete:  # finished by another process since we looked
                results[spec.run_id] = (spec, existing.path, existing.summary(), "done")
                continue
            # the group's runs share one data module (same data, split and order)
            prepared = _prepare_or_error(spec, data_dir, download, keep_going, members[0][0].data if members else None)
            if isinstance(prepared, BaseException):  # recorded as this run's failure, as one by one
                results[spec.run_id] = (spec, run_dir, _record_failure(spec, run_dir, prepared, started), "trained")
                continue
            members.append((prepared, run_dir))
        reason = lockstep.why_not(members[0][0].spec, members[0][0].module.model) if members else None
        if members and not reason:
            try:
                summaries = lockstep.train_group(members, out, progress, started, on_step)
                for (prepared, run_dir), summary in zip(members, summaries, strict=True):
                    results[prepared.spec.run_id] = (prepared.spec, run_dir, summary, "trained")
            except lockstep.LockstepFailed as why:
                # the members' own models were only copied into the stack: they are still as initialised
                reason = f"the group could not train together ({str(why)[:200]}): trained one by one"
        if members and reason:
            note(f"lockstep: {members[0][0].spec.problem}: {reason}")
            for prepared, run_dir in members:
                summary = _train(prepared, out, run_dir, False, time.time(), on_step)
                results[prepared.spec.run_id] = (prepared.spec, run_dir, summary, "trained")
    finally:
        claims.release()
    return [results[s.run_id] for s in specs if s.run_id in results]


def _record_failure(spec: RunSpec, run_dir: Path, exc: BaseException, started: float) -> dict[str, Any]:
    """A run that failed before training: its record says so (config, then summary last)."""
    record = RunRecord(run_dir)
    record.start()
    record.write_config({"run_id": spec.run_id, "spec": spec.to_record(), "versions": versions(),
                         "device": None})
    summary = {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": "".join(traceback.format_exception(exc, limit=5)),
               "wall_time_s": round(time.time() - started, 3)}
    record.finish(summary)
    return summary


def _train(prepared: Prepared, out: Path, run_dir: Path, progress: bool, started: float,
           on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    spec = prepared.spec
    use_wandb = "wandb" in spec.log.loggers
    if use_wandb:
        from initbench import dashboards

        dashboards.check_settings(spec.log.wandb_project, dashboards.wandb_dir(out))
    _quiet_lightning()
    speed = Throughput()
    module = prepared.module
    callbacks = [speed, *([RunBar(lambda: module.last_train_loss, prepared.data.steps_per_epoch)] if progress else []),
                 *([StepReport(on_step)] if on_step else [])]
    trainer = make_trainer(spec, callbacks, [CSVLogger(run_dir, name="", version="")], progress)
    record = RunRecord(run_dir)
    record.start()  # an interrupted earlier attempt is started over
    config = {
        "run_id": spec.run_id, "spec": spec.to_record(), "versions": versions(), "device": _device(trainer),
        "engine": "sequential", "data": {"dataset": spec.dataset, "input_shape": list(prepared.data.input_shape),
                 "num_classes": prepared.data.num_classes, **prepared.data.sizes()},
        "parameters": sum(p.numel() for p in prepared.module.model.parameters()),
    }
    record.write_config(config)
    record.write_manifest(prepared.manifest.to_dict())
    record.write_diagnostics(prepared.diagnostics)
    if use_wandb:  # started once the record exists; the device it names comes from the trainer
        wandb_logger = dashboards.train_logger(spec, out, prepared.manifest.to_dict(), config)
        trainer.loggers = [*trainer.loggers, wandb_logger]
    summary: dict[str, Any] = {"run_id": spec.run_id, "status": "ok"}
    torch.manual_seed(spec.seeds[1])  # any randomness inside training (e.g. dropout) follows the data seed
    try:
        trainer.validate(prepared.module, datamodule=prepared.data, verbose=False)  # the init's val acc, step 0
        trainer.fit(prepared.module, datamodule=prepared.data)
        trainer.test(prepared.module, datamodule=prepared.data, verbose=False)
        test = module.results["test"]
        summary.update({"test_loss": test["test/loss"], "test_acc": test["test/acc"]})
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
    if module.divergence.step is not None:
        summary.update(status="diverged", diverged_step=module.divergence.step)
    summary.update(record.tidy_metrics())
    chance = chance_accuracy(prepared.data.y_val)
    if summary["status"] == "ok" and collapsed(summary.get("train_loss_final"), summary.get("val_acc_final"),
                                               prepared.data.num_classes, chance, len(prepared.data.y_val)):
        summary.update(status="collapsed", chance_acc=chance)
    summary.update(steps=trainer.global_step, epochs=trainer.current_epoch,
                   train_time_s=round(speed.seconds, 3), images_per_s=speed.images_per_s,
                   wall_time_s=round(time.time() - started, 3))
    record.finish(summary)
    if use_wandb:
        dashboards.finish_train_logger(trainer.loggers[-1], summary, run_dir)
    return summary
