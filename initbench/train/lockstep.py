"""The lockstep engine: K runs that differ only in their init trained at once as one stacked model.

Within a seed every init sees the same batches (the paired design), so the members' parameters are stacked
(`torch.func.stack_module_state`) and one `vmap` of `functional_call` computes all K forward passes on the shared
batch. The optimizer works on the stacked tensors: SGD (with momentum), Adam and AdamW are elementwise, so each
member's slice is updated exactly as `torch.optim` would update that run alone. One Lightning Trainer owns the loop;
each member keeps its own CSV log and writes its own record, in the sequential engine's format under the same run
id. A member whose loss goes non-finite is recorded as diverged at its exact step; its slice never touches the
others' (every operation is per member), and the group goes on.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from initbench.errors import raise_stop
from initbench.record import RunRecord, run_config
from initbench.spec import LOCKSTEP_MODES, RunSpec
from initbench.train.module import Divergence, SteppedModule
from initbench.train.monitor import NormMonitor, RunBar, StepReport, Throughput, run_summary
from initbench.train.optim import OPTIMIZER_TABLE, SCHEDULE_TABLE, StackedOptimizer


class LockstepFailed(Exception):
    """The group could not train together (neither mode runs the model, or training crashed): no record is kept,
    and its runs are trained one by one instead, where each run's own outcome is recorded."""


SUPPORTED_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "64-true")
LOOP_ABOVE_PIXELS = 256  # on a CPU, convolutions over larger images run faster member by member (measured below)


def rule_mode(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> str:
    """The mode a group trains in unless one is asked for: `vmap` on a GPU, and on a CPU for models without
    convolutions and for images of at most 16x16 pixels; `loop` for convolutions over larger images on a CPU, where
    vmap turns them into slow grouped convolutions. Measured on this project's 2-core CPU, 8 SimpleCNNs, one forward
    and backward pass of 128 images: 8x8 vmap 41 ms, loop 56 ms; 28x28 vmap 674 ms, loop 495 ms; 32x32x3 vmap
    1131 ms, loop 614 ms; an MLP on 28x28 vmap 7.3 ms, loop 13.2 ms."""
    if device.type != "cpu":
        return "vmap"
    convolves = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    pixels = math.prod(input_shape[1:]) if len(input_shape) > 1 else 1
    return "loop" if convolves and pixels > LOOP_ABOVE_PIXELS else "vmap"


def _dim_order(t: torch.Tensor) -> tuple[int, ...] | None:
    """The dimensions of `t` from outermost to innermost in memory, when it is a permutation of a dense tensor."""
    order = tuple(sorted(range(t.dim()), key=lambda d: (-t.stride(d), d)))
    return order if t.permute(order).is_contiguous() else None


def why_not(spec: RunSpec, model: nn.Module) -> str | None:
    """Why a run cannot join a lockstep group (None when it can)."""
    if spec.precision not in SUPPORTED_PRECISIONS:
        return f"precision {spec.precision} needs a loss scaler per run: trained one by one"
    frozen = next((n for n, p in model.named_parameters() if not p.requires_grad), None)
    if frozen is not None:
        return f"parameter {frozen} is frozen (requires_grad=False): trained one by one"
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            return f"{type(module).__name__} ({name}) updates running statistics in training: trained one by one"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{type(module).__name__} ({name}) draws random masks: trained one by one"
    return None


class StackedClassifier(SteppedModule):
    """K copies of one architecture with their own parameters, trained on the same batches with cross-entropy."""

    def __init__(self, models: list[nn.Module], num_classes: int, spec: RunSpec,
                 log: Callable[[int, dict[str, float], int, int | None], None],
                 lrs: list[float] | None = None) -> None:
        super().__init__()
        self.k, self.num_classes, self.spec, self.log_member = len(models), num_classes, spec, log
        self.mode = "vmap"
        self._layouts: dict[str, list[tuple[int, ...] | None]] = {}
        self.lrs = lrs or [spec.lr] * self.k
        self.log_every_given = spec.log_every
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        for i, value in enumerate(buffers.values()):
            self.register_buffer(f"buffer{i}", value.clone())
        self.buffer_names = list(buffers)
        self.base = [copy.deepcopy(models[0]).to("meta")]  # a list: not a submodule, never moved or saved
        self.divergence = [Divergence() for _ in range(self.k)]  # as a run alone finds it, per member
        self.stopped: list[int | None] = [None] * self.k  # the step a diverged member's log ends at
        self.stop_epoch: list[int | None] = [None] * self.k  # the epoch count its run would end with
        self._val_after_stop = [False] * self.k
        self._frozen: dict[int, list[torch.Tensor]] = {}  # a stopped member's parameters, kept as they were
        self.monitor: NormMonitor | None = None  # made when training starts, on the parameters as laid out then

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[K, batch, classes]: every member's forward pass on the shared batch, as one `vmap` (`mode="vmap"`) or
        member by member on slices of the stacked parameters (`mode="loop"`: the single run's own kernels)."""
        params = dict(zip(self.names, self.stacked, strict=True))
        buffers = {n: getattr(self, f"buffer{i}") for i, n in enumerate(self.buffer_names)}
        self.base[0].train(self.training)  # not a submodule: eval() does not reach it by itself
        if self.mode == "loop":  # unbind: its backward stacks the K gradients (indexing would zero-fill K copies)
            ps = {n: p.unbind(0) for n, p in params.items()}
            bs = {n: b.unbind(0) for n, b in buffers.items()}
            return torch.stack([functional_call(self.base[0], ({n: p[m] for n, p in ps.items()},
                                                               {n: b[m] for n, b in bs.items()}), (x,))
                                for m in range(self.k)])

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base[0], (p, b), (inputs,))

        return vmap(one, in_dims=(0, 0, None))(params, buffers, x)

    def choose_mode(self, x: torch.Tensor, y: torch.Tensor, wanted: str = "auto") -> str:
        """Train `wanted`'s way (`auto`: `rule_mode`'s), or the other way where that one cannot run the model (e.g. an
        operation vmap has no rule for); never by timing, so every group and every rerun of a study trains alike.
        Each way first stores the stacked parameters in the memory layout their gradients arrive in (found by one
        forward and backward pass on a real batch)."""
        errors, layouts = [], {}
        preferred = rule_mode(self.base[0], tuple(x.shape[1:]), x.device) if wanted == "auto" else wanted
        for mode in LOCKSTEP_MODES:  # one vmap over the members, or member by member; in this order (each way's
            self.mode = mode         # layouts are found after the earlier one's), stopping at the one wanted
            try:
                layouts[mode] = self._arrival_layouts(x, y)
                self._relayout(layouts[mode])
            except Exception as exc:
                raise_stop(exc)
                errors.append(f"{mode}: {type(exc).__name__}: {exc}")
            if preferred in layouts:
                break
        for p in self.stacked:
            p.grad = None
        if not layouts:
            raise LockstepFailed("; ".join(errors))
        self._layouts = layouts
        self.use(preferred if preferred in layouts else next(iter(layouts)))
        return self.mode

    def use(self, mode: str) -> None:
        """Train (or evaluate) the members `mode`'s way, with the parameters stored as its gradients arrive (as
        `choose_mode` found them); only before the optimizer is made, and only a way `choose_mode` tried."""
        if mode not in self._layouts:
            raise LockstepFailed(f"lockstep mode {mode} was not prepared: choose_mode tried {', '.join(self._layouts)}")
        self.mode = mode
        self._relayout(self._layouts[mode])

    def on_train_start(self) -> None:
        super().on_train_start()
        self.monitor = NormMonitor(self.names, list(self.stacked), members=self.k)

    def _arrival_layouts(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, ...] | None]:
        """Per stacked parameter, the order of its dimensions in memory (outermost first) in which one backward pass
        delivers its gradient (None for a layout that is no permutation of a dense one)."""
        seen: list[tuple[int, ...] | None] = [None] * len(self.stacked)

        def note(i: int) -> Callable[[torch.Tensor], None]:
            return lambda grad: seen.__setitem__(i, _dim_order(grad))

        handles = [p.register_hook(note(i)) for i, p in enumerate(self.stacked)]
        try:
            self._member_losses(self.logits(x), y).sum().backward()
        finally:
            for handle in handles:
                handle.remove()
        return seen

    def _relayout(self, orders: list[tuple[int, ...] | None]) -> None:
        """Store each stacked parameter with its dimensions in `order` in memory: a gradient that arrives in the
        parameter's own layout is accumulated as it is, where any other layout is copied first (vmap's linear layers
        deliver weight gradients transposed; the copy cost a quarter of an MLP group's step here)."""
        for i, order in enumerate(orders):
            p = self.stacked[i]
            if order is None or order == _dim_order(p):
                continue
            inverse = sorted(range(len(order)), key=order.__getitem__)
            self.stacked[i] = nn.Parameter(p.detach().permute(order).contiguous().permute(inverse),
                                           requires_grad=p.requires_grad)

    def _member_losses(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        k, b, c = logits.shape
        losses = F.cross_entropy(logits.reshape(k * b, c), y.repeat(k), reduction="none").view(k, b)
        return losses.mean(1) if reduction == "mean" else losses.sum(1)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: int, opt: Any) -> None:
        opt.optimizer.zero_grad(set_to_none=True)
        logits = self.logits(x)
        losses = self._member_losses(logits, y)
        monitor = step % self.log_every == 0
        # each member's gradient is its own loss's: nothing crosses members
        self.backward_and_step(losses.sum(), opt, self.monitor.before_update if monitor else None)
        if self._frozen:  # a member that diverged keeps the parameters its run alone would end with
            with torch.no_grad():
                for m, kept in self._frozen.items():
                    for p, value in zip(self.stacked, kept, strict=True):
                        p[m] = value
        if self.spec.schedule != "none":
            self.schedule_step()
        if monitor:
            self._log_norms(step)
        self.keep(losses, logits, y)
        if monitor or step == self._last_step:
            self._flush(step)

    def _flush(self, step: int) -> None:
        """Per member: the window's mean train loss and accuracy, and the first non-finite loss (its exact step)."""
        losses, acc = self.window()  # [window, K], [K]
        finite = torch.isfinite(losses)
        first_bad = (~finite).float().argmax(0)
        rows = torch.stack([losses.mean(0), acc, finite.all(0).float(), first_bad.float()]).tolist()
        start = step - len(losses) + 1
        for m in range(self.k):
            if self.stopped[m] is not None:
                continue
            self.log_member(m, {"train/loss": rows[0][m], "train/acc": rows[1][m]}, step, None)
            if self.divergence[m].check(start, bool(rows[2][m]), int(rows[3][m])):
                self.stopped[m], self.stop_epoch[m] = step, self.current_epoch + 1
                self._frozen[m] = [p[m].detach().clone() for p in self.stacked]
        active = [m for m in range(self.k) if self.stopped[m] is None]
        if not active:
            self.trainer.should_stop = True
        self.last_train_loss = rows[0][active[0]] if active else None

    def _log_norms(self, step: int) -> None:
        """grad_norm/<name> (and /total), weight_norm/<name> and update_ratio/<name> of every member still training."""
        for m, metrics in enumerate(self.monitor.after_update()):
            if self.stopped[m] is None:
                self.log_member(m, metrics, step, None)

    def eval_outputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(x)
        return self._member_losses(logits, y, "sum"), logits

    def evaluated(self, stage: str, step: int, loss_sum: list[float], correct: list[float], n: list[float]) -> None:
        self.results = [{f"{stage}/loss": loss_sum[m] / n[m], f"{stage}/acc": correct[m] / n[m]}
                        for m in range(self.k)]
        active = next((m for m in range(self.k) if self.stopped[m] is None), 0)  # the progress bar's member
        self.trainer.callback_metrics[f"{stage}/acc"] = torch.tensor(self.results[active][f"{stage}/acc"])
        for m, metrics in enumerate(self.results):
            stopped = self.stopped[m]
            if stopped is None or (stage == "val" and step < stopped):
                self.log_member(m, metrics, step, self.current_epoch)
            elif stage == "val" and not self._val_after_stop[m]:
                # Run alone, a diverged run ends its epoch right after the step it was found at and is validated
                # there; its parameters have been kept as they were then, so this validation is the one it gets.
                self._val_after_stop[m] = True
                self.log_member(m, metrics, stopped, self.current_epoch)
            elif stage == "test":  # a diverged member's run ended right after the step it was found at
                self.log_member(m, metrics, stopped + 1, self.stop_epoch[m])

    def configure_optimizers(self) -> Any:
        s = self.spec
        if len(set(self.lrs)) == 1:  # one learning rate: torch.optim itself (elementwise, so exact per member)
            opt = OPTIMIZER_TABLE[s.optimizer](self.stacked.parameters(), self.lrs[0], s.momentum, s.weight_decay)
        else:
            opt = StackedOptimizer(self.stacked.parameters(), s.optimizer, self.lrs, s.momentum, s.weight_decay)
        sched = SCHEDULE_TABLE[s.schedule](opt, self.total_steps())
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_group(members: list[tuple[Any, Path]], out: Path, progress: bool, started: float,
                on_step: Callable[[int], None] | None = None, mode: str = "auto") -> list[dict[str, Any]]:
    """Train prepared runs (`Prepared`, their record folders) that share everything but the init as one stacked
    model, in `mode` (auto: `rule_mode`'s); write one record per member and return their summaries, in order. The
    caller holds their locks."""
    from initbench import dashboards
    from initbench.train.trainer import device_name, make_trainer, versions

    spec = members[0][0].spec
    data = members[0][0].data
    records = [RunRecord(run_dir) for _, run_dir in members]
    loggers = [r.metrics_logger() for r in records]
    wandb_runs: list[Any] = []  # one W&B run per member, open side by side, when the runs log to W&B

    def log(member: int, metrics: dict[str, float], step: int, epoch: int | None) -> None:
        loggers[member].log_metrics({**metrics, **({} if epoch is None else {"epoch": epoch})}, step=step)
        if wandb_runs:
            dashboards.log_step(wandb_runs[member], metrics, step, epoch)

    try:
        module = StackedClassifier([p.module.model for p, _ in members], data.num_classes, spec, log,
                                   [p.spec.lr for p, _ in members])
        speed = Throughput()
        callbacks = [speed, *([RunBar(lambda: module.last_train_loss, data.steps_per_epoch)] if progress else []),
                     *([StepReport(on_step)] if on_step else [])]
        trainer = make_trainer(spec, callbacks, [], progress)
        device = trainer.strategy.root_device
        x, y = (t[: spec.batch_size].to(device) for t in (data.x_train, data.y_train))
        module.to(device)
        mode = module.choose_mode(x, y, mode)
    except LockstepFailed:
        raise
    except Exception as exc:  # stacking or the first batch fails (memory, an unusual model): one by one instead
        raise_stop(exc)
        raise LockstepFailed(f"{type(exc).__name__}: {exc}") from None
    use_wandb = "wandb" in spec.log.loggers
    if use_wandb:
        dashboards.check_settings(spec.log.wandb_project, dashboards.wandb_dir(out))
    for (prepared, _), record in zip(members, records, strict=True):
        record.begin(run_config(prepared.spec, versions(), device_name(trainer), engine="lockstep",
                                group_size=len(members), group=[p.spec.run_id for p, _ in members],
                                lockstep_mode=mode, **prepared.facts()),
                     prepared.manifest.to_dict(), prepared.diagnostics)
    if use_wandb:  # started once the records exist, as for a run trained alone
        wandb_runs.extend(dashboards.member_run(p.spec, out, p.manifest.to_dict(), r.config())
                          for (p, _), r in zip(members, records, strict=True))
    torch.manual_seed(spec.seeds[1])
    try:
        trainer.validate(module, datamodule=data, verbose=False)
        trainer.fit(module, datamodule=data)  # which validates at its last step, so every stopped member too
        trainer.test(module, datamodule=data, verbose=False)
    except Exception as exc:  # the group crashed: the caller trains its runs one by one, each recording its own
        raise_stop(exc)
        for run in wandb_runs:
            run.finish(exit_code=1)
        raise LockstepFailed(f"{type(exc).__name__}: {exc}") from exc
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1): the records stay unfinished, rerun later
            import signal

            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    wall = round((time.time() - started) / len(members), 3)
    summaries = []
    for m, ((prepared, _), record, logger) in enumerate(zip(members, records, loggers, strict=True)):
        logger.finalize("success")
        stopped = module.stopped[m]
        summary = run_summary(prepared.spec.run_id, record.tidy_metrics(), data.y_val, data.num_classes,
                              test=module.results[m], error=None, diverged_step=module.divergence[m].step,
                              steps=module.steps_done if stopped is None else stopped + 1,
                              epochs=trainer.current_epoch if stopped is None else module.stop_epoch[m], speed=speed,
                              wall_time_s=wall, log_every=module.log_every)
        record.finish(summary)
        if wandb_runs:
            dashboards.finish_run(wandb_runs[m], summary, record.path)
        summaries.append(summary)
    return summaries
