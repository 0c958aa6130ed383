"""Optimizers by name, for the optimizer ablation of student training.

Blank et al. report that adaptive optimizers (Adam, RMSprop, sign-SGD, SGD preconditioned with
fixed Adam scales) transfer a trait and plain SGD does not. The two that torch lacks live here:

- `SignSGD`: `p -= lr * sign(g)` (decoupled weight decay optional).
- `PrecondSGD`: AdamW for a short warm-up, then plain SGD whose per-parameter step sizes are
  frozen at Adam's `1 / (sqrt(v_hat) + eps)`. It separates "a fixed per-coordinate
  preconditioner" from "adaptivity over time". The scales are optimizer state, so they are saved
  and restored with `state_dict()` like everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from interp.core.errors import SublensError

OPTIMIZERS = ("adamw", "sgd", "sgd-momentum", "rmsprop", "signsgd", "precond-sgd")


class SignSGD(Optimizer):
    """Sign descent: every coordinate moves by exactly `lr` against its gradient's sign."""

    def __init__(self, params: Iterable[Any], lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(torch.sign(p.grad), alpha=-lr)
        return loss


class PrecondSGD(Optimizer):
    """AdamW for `warmup_steps` steps, then SGD scaled by the frozen Adam scales.

    After the warm-up each parameter keeps `scale = 1 / (sqrt(v_hat) + eps)` (its bias-corrected
    second moment at the last warm-up step) and updates as `p -= lr * scale * g`: no momentum and
    no further adaptation.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        warmup_steps: int = 20,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if warmup_steps < 1:
            raise SublensError(
                f"precond-sgd needs at least one AdamW warm-up step (got {warmup_steps}): "
                "set --precond-warmup-steps to 1 or more"
            )
        defaults = {
            "lr": lr,
            "warmup_steps": int(warmup_steps),
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                if wd:
                    p.mul_(1.0 - lr * wd)
                if "scale" in state:
                    p.addcmul_(g, state["scale"], value=-lr)
                    continue
                t = state["step"]
                state["exp_avg"].lerp_(g, 1.0 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                bc1 = 1.0 - beta1**t
                bc2 = 1.0 - beta2**t
                denom = (state["exp_avg_sq"] / bc2).sqrt_().add_(eps)
                p.addcdiv_(state["exp_avg"], denom, value=-lr / bc1)
                if t >= group["warmup_steps"]:
                    # Freeze the preconditioner; the moments are no longer needed.
                    state["scale"] = denom.reciprocal_()
                    del state["exp_avg"], state["exp_avg_sq"]
        return loss


def make_optimizer(
    name: str,
    params: Iterable[Any],
    lr: float,
    weight_decay: float = 0.0,
    warmup_steps: int = 20,
    **kw: Any,
) -> Optimizer:
    """The optimizer `name` over `params` (`warmup_steps` is used by precond-sgd only)."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kw)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **kw)
    if name == "sgd-momentum":
        return torch.optim.SGD(
            params, lr=lr, momentum=kw.pop("momentum", 0.9), weight_decay=weight_decay, **kw
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, **kw)
    if name == "signsgd":
        return SignSGD(params, lr=lr, weight_decay=weight_decay)
    if name == "precond-sgd":
        return PrecondSGD(params, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay, **kw)
    raise SublensError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
