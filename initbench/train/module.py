"""The LightningModule that trains any classifier `nn.Module` with cross-entropy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from initbench.plan import OPTIMIZERS, SCHEDULES

# name -> (parameters, lr, momentum, weight decay) -> torch optimizer; exactly the names a RunSpec may use.
OPTIMIZER_TABLE: dict[str, Any] = {
    "sgd": lambda params, lr, momentum, wd: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd),
    "adam": lambda params, lr, momentum, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, momentum, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}
# name -> (optimizer, total steps) -> learning-rate scheduler stepped every step, or None.
SCHEDULE_TABLE: dict[str, Any] = {
    "none": lambda opt, steps: None,
    "cosine": lambda opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps)),
}
assert tuple(OPTIMIZER_TABLE) == OPTIMIZERS and tuple(SCHEDULE_TABLE) == SCHEDULES


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


class Classifier(L.LightningModule):
    """Cross-entropy training of `model`.

    Train loss/acc are kept on the device per step and averaged over each logging window, which is
    flushed every `log_every` steps, at step 0 and at the last step; the flush also finds the first
    non-finite loss and ends the run as diverged at that exact step. Optimization is manual: one
    optimizer step per batch, without Lightning's closure machinery, which on small models costs
    as much as the step itself.
    """

    def __init__(self, model: nn.Module, num_classes: int, optimizer: str = "sgd", lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "none",
                 log_every: int = 20) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.optimizer_name, self.lr, self.momentum = optimizer, lr, momentum
        self.weight_decay, self.schedule, self.log_every = weight_decay, schedule, log_every
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.divergence = Divergence()
        self._losses: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._seen = 0
        self._last_step = -1
        self.last_train_loss: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning resets plain bookkeeping attributes (e.g. _current_fx_name) around every hook;
        # nn.Module.__setattr__'s parameter/buffer/module checks make that a per-step cost.
        if name in self.__dict__ and (value is None or isinstance(value, str | int | float | bool)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if device.type == "cpu":
            return batch
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def on_train_start(self) -> None:
        self._last_step = int(self.trainer.estimated_stepping_batches) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        step = self.global_step
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.manual_backward(loss)
        opt.step()
        if self.schedule != "none":
            self.lr_schedulers().step()
        self._losses.append(loss.detach())
        self._correct.append((logits.detach().argmax(1) == y).sum())
        self._seen += len(y)
        if step % self.log_every == 0 or step == self._last_step:
            self._flush(step)
        return loss

    def _flush(self, step: int) -> None:
        losses = torch.stack(self._losses)
        finite = torch.isfinite(losses)
        values = torch.cat([losses.mean().view(1), torch.stack(self._correct).sum().view(1) / self._seen,
                            finite.all().view(1), (~finite).float().argmax().view(1)]).tolist()
        if self.divergence.check(step - len(self._losses) + 1, bool(values[2]), int(values[3])):
            self.trainer.should_stop = True
        log_metrics(self.trainer.loggers, {"train/loss": values[0], "train/acc": values[1]}, step)
        self.last_train_loss = values[0]  # for the progress bar
        self._losses, self._correct, self._seen = [], [], 0

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor], metric: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.model(x)
        metric.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, batch_size=len(y))
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch, self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch, self.test_acc)

    def configure_optimizers(self) -> Any:
        opt = OPTIMIZER_TABLE[self.optimizer_name](self.model.parameters(), self.lr, self.momentum, self.weight_decay)
        sched = SCHEDULE_TABLE[self.schedule](opt, self.trainer.estimated_stepping_batches)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
