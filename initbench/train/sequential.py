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

from initbench.errors import raise_stop
from initbench.record import RunRecord, run_config
from initbench.train.monitor import RunBar, StepReport, Throughput, run_summary
from initbench.train.prepare import Prepared
from initbench.train.trainer import device_name, make_trainer, quiet_lightning, versions


def train_run(prepared: Prepared, out: Path, run_dir: Path, progress: bool, started: float,
              on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one prepared run with one Lightning fit and write its record into `run_dir`; its summary."""
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
    record = RunRecord(run_dir)
    trainer = make_trainer(spec, callbacks, [record.metrics_logger()], progress)
    config = run_config(spec, versions(), device_name(trainer), engine="sequential", **prepared.facts())
    record.begin(config, prepared.manifest.to_dict(), prepared.diagnostics)  # an interrupted attempt starts over
    if use_wandb:  # started once the record exists; the device it names comes from the trainer
        wandb_logger = dashboards.train_logger(spec, out, prepared.manifest.to_dict(), config)
        trainer.loggers = [*trainer.loggers, wandb_logger]
    test, error = None, None
    torch.manual_seed(spec.seeds[1])  # any randomness inside training (e.g. dropout) follows the data seed
    try:
        trainer.validate(prepared.module, datamodule=prepared.data, verbose=False)  # the init's val acc, step 0
        trainer.fit(prepared.module, datamodule=prepared.data)
        trainer.test(prepared.module, datamodule=prepared.data, verbose=False)
        test = module.results["test"]
    except Exception as exc:  # a crash inside training is a result too: recorded, not lost
        raise_stop(exc)
        error = (f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5))
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1); the run stays unfinished, rerun later
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    for logger in trainer.loggers:
        logger.finalize("success")
    summary = run_summary(spec.run_id, record.tidy_metrics(), prepared.data.y_val, prepared.data.num_classes,
                          test=test, error=error, diverged_step=module.divergence.step, steps=module.steps_done,
                          epochs=trainer.current_epoch, speed=speed, wall_time_s=round(time.time() - started, 3),
                          log_every=module.log_every)
    record.finish(summary)
    if use_wandb:
        dashboards.finish_train_logger(trainer.loggers[-1], summary, run_dir)
    return summary
