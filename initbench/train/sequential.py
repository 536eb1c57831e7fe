"""The sequential engine: one prepared run, one Lightning fit; its record written as it trains (config, manifest and
step-0 diagnostics first, the curves by the CSV logger, the summary last)."""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger

from initbench.record import RunRecord
from initbench.train.monitor import RunBar, StepReport, Throughput, chance_accuracy, collapsed
from initbench.train.prepare import Prepared
from initbench.train.trainer import device_name, make_trainer, quiet_lightning, versions


def train_run(prepared: Prepared, out: Path, run_dir: Path, progress: bool, started: float,
           on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    spec = prepared.spec
    use_wandb = "wandb" in spec.log.loggers
    if use_wandb:
        from initbench import dashboards

        dashboards.check_settings(spec.log.wandb_project, dashboards.wandb_dir(out))
    quiet_lightning()
    speed = Throughput()
    module = prepared.module
    callbacks = [speed, *([RunBar(lambda: module.last_train_loss, prepared.data.steps_per_epoch)] if progress else []),
                 *([StepReport(on_step)] if on_step else [])]
    trainer = make_trainer(spec, callbacks, [CSVLogger(run_dir, name="", version="")], progress)
    record = RunRecord(run_dir)
    record.start()  # an interrupted earlier attempt is started over
    config = {
        "run_id": spec.run_id, "spec": spec.to_record(), "versions": versions(), "device": device_name(trainer),
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


