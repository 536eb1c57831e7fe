"""The optimizers and learning-rate schedules a run may name (spec.OPTIMIZERS, spec.SCHEDULES), as torch builds them;
and, for stacked lockstep members whose learning rates differ, SGD (with momentum), Adam and AdamW with each member's
slice updated as `torch.optim` updates a single run (its single-tensor code path, step for step).

In StackedOptimizer every tensor holds K members along its first dimension; `lrs` holds their learning rates. The
param group's `lr` is a multiplier (1.0 at the start) that a learning-rate scheduler may anneal: member k's rate
is lrs[k] x lr.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from initbench.spec import OPTIMIZERS, SCHEDULES

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


class StackedOptimizer(torch.optim.Optimizer):
    def __init__(self, params: Any, kind: str, lrs: list[float], momentum: float = 0.0, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if kind not in OPTIMIZERS:
            raise KeyError(kind)
        super().__init__(params, {"lr": 1.0, "momentum": momentum, "weight_decay": weight_decay, "betas": betas,
                                  "eps": eps})
        self.kind = kind
        self.lrs = [float(lr) for lr in lrs]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:  # Lightning's hooks (and any gradient clipping) run in the closure
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rates = [lr * group["lr"] for lr in self.lrs]  # Python floats: the scalars torch.optim would use
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.kind == "sgd":
                    self._sgd(p, group, rates)
                else:
                    self._adam(p, group, rates)
        return loss

    def _sgd(self, p: torch.Tensor, group: dict[str, Any], rates: list[float]) -> None:
        grad = p.grad
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])
        if group["momentum"] != 0:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.clone(grad).detach()
            else:
                state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
            grad = state["momentum_buffer"]
        for k, rate in enumerate(rates):
            p[k].add_(grad[k], alpha=-rate)

    def _adam(self, p: torch.Tensor, group: dict[str, Any], rates: list[float]) -> None:
        grad = p.grad
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        if group["weight_decay"] != 0:
            if self.kind == "adamw":
                for k, rate in enumerate(rates):
                    p[k].mul_(1 - rate * group["weight_decay"])
            else:
                grad = grad.add(p, alpha=group["weight_decay"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** state["step"])
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(group["eps"])
        for k, rate in enumerate(rates):
            p[k].addcdiv_(state["exp_avg"][k], denom[k], value=-(rate / bias_correction1))
