"""The LightningModule that trains any classifier `nn.Module` with cross-entropy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from initbench.spec import log_interval
from initbench.train.monitor import NormMonitor
from initbench.train.optim import OPTIMIZER_TABLE, SCHEDULE_TABLE


def log_metrics(loggers: Any, metrics: dict[str, float], step: int) -> None:
    """Hand step metrics straight to the loggers. (`LightningModule.log` would route them through Lightning's
    per-step collection, whose cost is paid every step; this one only on logging steps.)"""
    for logger in loggers:
        logger.log_metrics(metrics, step=step)


class Divergence:
    """The first step whose training loss was not finite, found from a window of per-step losses; the runner asks
    it whether (and where) the run diverged."""

    def __init__(self) -> None:
        self.step: int | None = None

    def check(self, first_step: int, all_finite: bool, first_bad: int) -> bool:
        """Record the window starting at `first_step`; True when this window holds the first non-finite loss."""
        if all_finite or self.step is not None:
            return False
        self.step = first_step + first_bad
        return True


class SteppedModule(L.LightningModule):
    """What both engines' modules share: each training batch Lightning hands over is a slice of up to
    `data.STEPS_PER_BATCH` batches (see `data.TensorBatches`), stepped through here one optimizer step each by
    `train_step(x, y, step, optimizer)`; Lightning's loop, hooks and wrappers are paid once per slice.

    Lightning still owns the loop: epochs, validation, devices, precision, loggers and `should_stop`; the step that
    ends the run (the last epoch's last, or max_steps', which may fall inside a slice) stops the slice there and
    asks Lightning to stop, so every run is validated at its last step. The module counts its optimizer steps itself
    (`steps_done`): torch's backward and step run without Lightning's per-step wrappers, so Lightning's own step
    counter (`global_step`) is not what a run reports. Validation and test metrics are tallied here and logged where
    a run's epoch-end metrics belong (validation at the last training step, the test after it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.steps_done = 0  # optimizer steps taken in this fit
        self.last_train_loss: float | None = None
        self.log_every_given: int | None = None  # the spec's log_every; None: LOG_POINTS_PER_EPOCH per epoch
        self.log_every = 1  # the steps between logged points, set when training starts
        self._last_step = -1
        self._plain = True
        self._before_update: Any = None
        self._losses: list[torch.Tensor] = []  # the logging window's per-step losses
        self._correct: list[torch.Tensor] = []  # ... and its correct predictions, tallied a few steps at a time
        self._seen = 0
        self._logits: list[torch.Tensor] = []  # steps not yet tallied
        self._labels: list[torch.Tensor] = []
        self._eval: list[torch.Tensor] = []  # per evaluation batch: summed loss, correct predictions, examples

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning resets plain bookkeeping attributes (e.g. _current_fx_name) around every hook;
        # nn.Module.__setattr__'s parameter/buffer/module checks make that a per-batch cost.
        if name in self.__dict__ and (value is None or isinstance(value, str | int | float | bool)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if device.type == "cpu":
            return batch
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def total_steps(self) -> int:
        """The optimizer steps this fit takes unless stopped early: epochs x steps per epoch, capped by max_steps."""
        total = self.trainer.max_epochs * self.trainer.datamodule.steps_per_epoch
        return min(total, self.trainer.max_steps) if self.trainer.max_steps > 0 else total

    def on_train_start(self) -> None:
        self._last_step = self.total_steps() - 1
        self.log_every = log_interval(self.log_every_given, self.trainer.datamodule.steps_per_epoch)
        # A precision that scales the loss (16-mixed) needs Lightning's backward and step; otherwise torch's own are
        # what they would call, without their per-step wrappers.
        self._plain = getattr(self.trainer.precision_plugin, "scaler", None) is None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, int]:
        xs, ys = batch
        opt = self.optimizers()
        size = self.trainer.datamodule.batch_size
        step, trained = self.steps_done, 0
        for x, y in zip(xs.split(size), ys.split(size), strict=True):
            self.train_step(x, y, step, opt)
            step, trained = step + 1, trained + len(y)
            if step > self._last_step:  # the run's last step (max_steps may fall inside a batch): validated there
                self.trainer.should_stop = True
            if self.trainer.should_stop:
                break
        self._tally()
        return {"examples": trained}  # for Throughput

    def keep(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """A step's loss(es) and predictions for the logging window (logits [..., batch, classes])."""
        self._losses.append(loss.detach())
        self._logits.append(logits.detach())
        self._labels.append(y)
        self._seen += len(y)
        if len(self._logits) == 16:
            self._tally()

    def _tally(self) -> None:
        """The kept steps' correct predictions, counted in one pass (per member in lockstep)."""
        if self._logits:
            hits = torch.cat(self._logits, dim=-2).argmax(-1) == torch.cat(self._labels)
            self._correct.append(hits.sum(-1))
            self._logits, self._labels = [], []

    def window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The logging window's losses [steps, ...] and accuracy [...] (per member in lockstep); then a new one."""
        self._tally()
        losses, acc = torch.stack(self._losses), torch.stack(self._correct).sum(0) / self._seen
        self._losses, self._correct, self._seen = [], [], 0
        return losses, acc

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: int, opt: Any) -> None:
        raise NotImplementedError

    def backward_and_step(self, loss: torch.Tensor, opt: Any, before_update: Any = None) -> None:
        """Backward, then `before_update()` (gradients final, weights not yet updated), then one optimizer step,
        counted in `steps_done`."""
        if self._plain:
            loss.backward()
            if before_update is not None:
                before_update()
            opt.optimizer.step()
        else:
            self.manual_backward(loss)
            self._before_update = before_update  # called once the scaler has unscaled the gradients
            opt.step()
        self.steps_done += 1

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self._before_update is not None:
            self._before_update()
            self._before_update = None

    def schedule_step(self) -> None:
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()

    def eval_outputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy, logits [..., batch, classes]) of an evaluation batch (per member in lockstep)."""
        raise NotImplementedError

    def evaluated(self, stage: str, step: int, loss_sum: Any, correct: Any, n: Any) -> None:
        """A validation or test pass's totals (floats, or lists per member in lockstep), to record at `step`."""
        raise NotImplementedError

    def _tally_eval(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        loss_sum, logits = self.eval_outputs(x, y)
        loss_sum = loss_sum.float()
        self._eval.append(torch.stack([loss_sum, (logits.argmax(-1) == y).sum(-1).float(),
                                       torch.full_like(loss_sum, float(len(y)))]))

    def _eval_end(self, stage: str, step: int) -> None:
        loss_sum, correct, n = torch.stack(self._eval).sum(0).tolist()
        self._eval = []
        self.evaluated(stage, step, loss_sum, correct, n)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._tally_eval(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val", max(self.steps_done - 1, 0))  # at the last training step

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._tally_eval(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test", self.steps_done)


class Classifier(SteppedModule):
    """Cross-entropy training of `model`.

    Train loss/acc are kept on the device per step and averaged over each logging window, which is
    flushed every `log_every` steps, at step 0 and at the last step; the flush also finds the first
    non-finite loss and ends the run as diverged at that exact step. Every `log_every` steps (and at
    step 0, the init's signature) its `NormMonitor` logs the step's per-layer gradient and weight norms and
    update ratios. Optimization is manual: one optimizer step per batch, without Lightning's closure
    machinery, which on small models costs as much as the step itself.
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer: str = "sgd", lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "none",
                 log_every: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_name, self.lr, self.momentum = optimizer, lr, momentum
        self.weight_decay, self.schedule, self.log_every_given = weight_decay, schedule, log_every
        self.divergence = Divergence()
        self.monitor = NormMonitor.of(model)
        self.results: dict[str, dict[str, float]] = {}  # stage -> its last metrics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: int, opt: Any) -> None:
        opt.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        watch = step % self.log_every == 0
        self.backward_and_step(loss, opt, self.monitor.before_update if watch else None)
        if self.schedule != "none":
            self.schedule_step()
        if watch:
            log_metrics(self.trainer.loggers, self.monitor.after_update()[0], step)
        self.keep(loss, logits, y)
        if step % self.log_every == 0 or step == self._last_step:
            self._flush(step)

    def _flush(self, step: int) -> None:
        losses, acc = self.window()
        finite = torch.isfinite(losses)
        values = torch.cat([losses.mean().view(1), acc.view(1), finite.all().view(1),
                            (~finite).float().argmax().view(1)]).tolist()  # one transfer to the host
        if self.divergence.check(step - len(losses) + 1, bool(values[2]), int(values[3])):
            self.trainer.should_stop = True
        log_metrics(self.trainer.loggers, {"train/loss": values[0], "train/acc": values[1]}, step)
        self.last_train_loss = values[0]  # for the progress bar

    def eval_outputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return F.cross_entropy(logits, y, reduction="sum"), logits

    def evaluated(self, stage: str, step: int, loss_sum: float, correct: float, n: float) -> None:
        self.results[stage] = {f"{stage}/loss": loss_sum / n, f"{stage}/acc": correct / n}
        self.trainer.callback_metrics[f"{stage}/acc"] = torch.tensor(correct / n)  # for the progress bar
        log_metrics(self.trainer.loggers, {**self.results[stage], "epoch": self.current_epoch}, step)

    def configure_optimizers(self) -> Any:
        opt = OPTIMIZER_TABLE[self.optimizer_name](self.model.parameters(), self.lr, self.momentum, self.weight_decay)
        sched = SCHEDULE_TABLE[self.schedule](opt, self.total_steps())
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
