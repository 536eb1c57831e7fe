"""Callbacks that watch training (per-layer gradient/weight norms, throughput) and the collapse rule."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar


class NormMonitor:
    """Per parameter tensor, for one optimizer step: `grad_norm/<name>` (plus `grad_norm/total`), `weight_norm/<name>`
    and `update_ratio/<name>` (|step update| / |weight|, NaN while the weight is all zeros). The training module calls
    `before_update()` once the step's gradients are final and `after_update()` once the weights are updated, on the
    steps it logs; steps in between cost nothing. The norms reach the host in one transfer.

    One monitor serves both engines: a run's model (`NormMonitor.of(model)`), or a lockstep group's stacked
    parameters (`members=K`: each tensor holds K members along its first dimension, and every figure is per member).
    """

    def __init__(self, names: list[str], params: list[torch.Tensor], members: int | None = None) -> None:
        self.names, self.params, self.members = names, params, members
        self._pending: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]] | None = None

    @classmethod
    def of(cls, model: torch.nn.Module) -> NormMonitor:
        """The monitor of a model's trainable parameters."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return cls([n for n, _ in named], [p for _, p in named])

    def _norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """[params] (one run: one `torch._foreach_norm` call) or [params, members]."""
        if self.members is None:
            return torch.stack(torch._foreach_norm(tensors))
        return torch.stack([t.flatten(1).norm(dim=1) for t in tensors])

    def before_update(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        weights = [p.detach() for p in self.params]
        self._pending = (self._norms(grads), self._norms(weights), [w.clone() for w in weights])

    def after_update(self) -> list[dict[str, float]]:
        """The step's figures, per member (one run: a list of one)."""
        grad_norms, weight_norms, before = self._pending  # type: ignore[misc]
        self._pending = None
        weights = [p.detach() for p in self.params]
        if self.members is None:
            updates, total = self._norms(torch._foreach_sub(weights, before)), grad_norms.norm().view(1)
        else:
            updates = self._norms([w - b for w, b in zip(weights, before, strict=True)])
            total = grad_norms.norm(dim=0, keepdim=True)
        ratios = torch.where(weight_norms > 0, updates / weight_norms, torch.nan)  # undefined for all-zero weights
        table = torch.cat([grad_norms, total, weight_norms, ratios])
        rows = [table.tolist()] if self.members is None else table.T.tolist()
        return [norm_metrics(self.names, row) for row in rows]


def norm_metrics(names: list[str], values: list[float]) -> dict[str, float]:
    """The logged norms from [grad norms..., total grad norm, weight norms..., update ratios...] in `names` order."""
    n = len(names)
    metrics = {f"grad_norm/{k}": v for k, v in zip(names, values[:n], strict=True)}
    metrics["grad_norm/total"] = values[n]
    metrics.update({f"weight_norm/{k}": v for k, v in zip(names, values[n + 1 : 2 * n + 1], strict=True)})
    metrics.update({f"update_ratio/{k}": v for k, v in zip(names, values[2 * n + 1 :], strict=True)})
    return metrics


class Throughput(Callback):
    """Wall time spent training (validation excluded) and the number of examples seen."""

    def __init__(self) -> None:
        self.examples = 0
        self.seconds = 0.0
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.examples += outputs["examples"]  # the examples of the steps taken (a batch may stop part-way)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(pl_module)

    def _stop(self, pl_module: L.LightningModule) -> None:
        if self._start:
            self._sync(pl_module)
            self.seconds += time.perf_counter() - self._start
            self._start = 0.0

    @property
    def images_per_s(self) -> float | None:
        return self.examples / self.seconds if self.seconds > 0 else None


COLLAPSE_LOSS_TOLERANCE = 0.05  # relative distance of the final train loss to ln(classes)
COLLAPSE_ACC_SE = 3.0  # binomial standard errors above the majority-class share still count as chance


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent class of `labels` (chance level)."""
    return float(torch.bincount(labels).max()) / len(labels) if len(labels) else math.nan


def collapse_rule(num_classes: int, chance_acc: float, n_val: int) -> dict[str, float]:
    """The collapse rule's numbers for one run: its final training loss within 5% of ln(classes) (the loss of a
    uniform guess) and its final validation accuracy no better than chance (the majority-class share of the
    validation split plus 3 binomial standard errors)."""
    uniform_loss = math.log(num_classes)
    return {"train_loss_from": uniform_loss * (1 - COLLAPSE_LOSS_TOLERANCE),
            "train_loss_to": uniform_loss * (1 + COLLAPSE_LOSS_TOLERANCE),
            "val_acc_at_most": chance_acc + COLLAPSE_ACC_SE * math.sqrt(chance_acc * (1 - chance_acc) / n_val)}


def collapsed(train_loss_final: float | None, val_acc_final: float | None, num_classes: int, chance_acc: float,
              n_val: int) -> bool:
    """A run that never trained, by `collapse_rule`."""
    if train_loss_final is None or val_acc_final is None or num_classes < 2 or n_val < 1:
        return False
    rule = collapse_rule(num_classes, chance_acc, n_val)
    return (rule["train_loss_from"] <= train_loss_final <= rule["train_loss_to"]
            and val_acc_final <= rule["val_acc_at_most"])


def run_summary(run_id: str, tidy: dict[str, Any], y_val: torch.Tensor, num_classes: int, *,
                test: dict[str, float] | None, error: tuple[str, str] | None, diverged_step: int | None, steps: int,
                epochs: int, speed: Throughput, wall_time_s: float, log_every: int) -> dict[str, Any]:
    """A trained run's summary.json, from either engine: the status (`ok`; `failed` with the error and traceback; then
    `diverged` at its step, else `collapsed` by the collapse rule), the test figures, the curves' final figures
    (`tidy`: RunRecord.tidy_metrics), the steps and epochs taken, the steps between logged points, and the time it
    took. A collapsed run records the rule's numbers it was judged by (`collapse_rule`)."""
    summary: dict[str, Any] = {"run_id": run_id, "status": "ok"}
    if test is not None:
        summary.update(test_loss=test["test/loss"], test_acc=test["test/acc"])
    if error is not None:
        summary.update(status="failed", error=error[0], traceback=error[1])
    if diverged_step is not None:
        summary.update(status="diverged", diverged_step=diverged_step)
    summary.update(tidy)
    chance = chance_accuracy(y_val)
    if summary["status"] == "ok" and collapsed(summary.get("train_loss_final"), summary.get("val_acc_final"),
                                               num_classes, chance, len(y_val)):
        summary.update(status="collapsed", chance_acc=chance, collapse_rule=collapse_rule(num_classes, chance,
                                                                                          len(y_val)))
    summary.update(steps=steps, epochs=epochs, log_every=log_every, train_time_s=round(speed.seconds, 3),
                   images_per_s=speed.images_per_s,
                   wall_time_s=wall_time_s)
    return summary


class StepReport(Callback):
    """Tells `report(steps)` after every training batch, with the optimizer steps taken so far (a sweep's bar advances
    within a run)."""

    def __init__(self, report: Any) -> None:
        self.report = report

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.report(pl_module.steps_done)


class RunBar(TQDMProgressBar):
    """A run's progress: epoch i/N, its steps done of `steps_per_epoch` (a training batch holds several), the step,
    the last logged train loss (`last_loss()`) and the last validation accuracy; validation bars leave no line
    behind."""

    def __init__(self, last_loss: Callable[[], float | None], steps_per_epoch: int) -> None:
        super().__init__()
        self.last_loss, self.steps_per_epoch = last_loss, steps_per_epoch
        self._epoch_start = 0

    @property
    def total_train_batches(self) -> int:
        return self.steps_per_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_start = pl_module.steps_done
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = pl_module.steps_done - self._epoch_start
        self.train_progress_bar.n = n
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        out: dict[str, Any] = {"step": pl_module.steps_done}
        loss = self.last_loss()
        if loss is not None:
            out["loss"] = f"{loss:.3f}"
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            out["val acc"] = f"{float(acc):.3f}"
        return out

    def init_validation_tqdm(self) -> Any:
        bar = super().init_validation_tqdm()
        bar.leave = False
        return bar
