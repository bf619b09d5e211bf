"""The Neumann optimizer (Krishnan, Xiao, Saurous, ICLR 2018, arXiv 1712.03298).

Owns the update. There is no official code and the public re-implementations are wrong in
several places, so this follows the paper's Algorithm 2 and ALGORITHMS.md §4, and every choice the
paper leaves open is marked DECIDE here and tested in tests/algorithms/test_neumann.py.

The idea: the Newton step z solves H z = −g. Its Neumann series z = −η Σⱼ (I − ηH)ʲ g (valid for
η < 1/λ_max) is summed by the recurrence mₖ₊₁ = mₖ − η(g + H mₖ), and H·m is replaced by the
gradient at a displaced point, so a step costs one gradient: no Hessian-vector product, no second
backward, two extra parameter copies (m and v, like Adam). The parameters the model holds are the
displaced point w; the iterate to evaluate and export is w − μm (`exported_weights`).

One step, with g the mini-batch gradient at w (computed by the trainer's single backward):
    reset step (every K epochs):  m = −η g                       (see the DECIDE below for w)
    otherwise:  r = ‖w − v‖,  d = g + (α r² − β / r²)·(w − v)/r     (∇ of α/3·r³ + β/r)
                m = μ m − η d,  w = w + μ m − η d
    always:     v = w + γ (v − w)
Defaults (the paper's for every model): α = 1e-7, β = 1e-5 × number of parameters, γ = 0.99,
μ = 1 − 1/(1 + t) clipped to [0.5, 0.9], 5 epochs of plain SGD first, K = 10 epochs doubling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

# DECIDE: ‖w − v‖ below this counts as zero and the regulariser is left out for that step; its
# direction (w − v)/‖w − v‖ is undefined there (it is exactly zero at the first Neumann step
# after a warm-up that started v at w).
NORM_EPSILON = 1e-12


def regulariser(diff: list[Tensor], alpha: float, beta: float) -> Tensor:
    """R(w) = α/3·‖w − v‖³ + β/‖w − v‖: cubic pull toward v, repulsion from it."""
    r = torch.sqrt(sum((torch.sum(t * t) for t in diff), torch.zeros(())))
    return alpha / 3.0 * r**3 + beta / r


def regulariser_gradient(diff: list[Tensor], alpha: float, beta: float) -> list[Tensor]:
    """∇_w R = (α r² − β/r²)·(w − v)/r with r = ‖w − v‖ over all parameters at once."""
    # DECIDE: global norms. The paper treats w as one vector (β scales with the total number
    # of parameters), so r is the norm over every parameter together, not per tensor.
    r = math.sqrt(sum(float(torch.sum(t * t)) for t in diff))
    if r < NORM_EPSILON:
        return [torch.zeros_like(t) for t in diff]
    scale = (alpha * r * r - beta / (r * r)) / r
    return [t * scale for t in diff]


class Neumann(Optimizer):
    """Neumann optimizer. Call `set_epoch(e)` at the start of every epoch (like a sampler)."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        *,
        alpha: float = 1e-7,
        beta_per_param: float = 1e-5,
        gamma: float = 0.99,
        sgd_warmup_epochs: int = 5,
        reset_epochs: int = 10,
        weight_decay: float = 0.0,
        momentum: float | None = None,
    ) -> None:
        # Hyper-parameter checks first, each naming its spec field.
        checks = [
            (lr > 0.0, "learningRate.base", f"must be > 0, got {lr}"),
            (alpha >= 0.0, "optimizer.neumann.alpha", f"must be >= 0, got {alpha}"),
            (beta_per_param >= 0.0, "optimizer.neumann.betaPerParam", f"must be >= 0, got {beta_per_param}"),  # noqa: E501
            (0.0 <= gamma < 1.0, "optimizer.neumann.gamma", f"must lie in [0, 1), got {gamma}"),
            (sgd_warmup_epochs >= 0, "optimizer.neumann.sgdWarmupEpochs", f"must be >= 0, got {sgd_warmup_epochs}"),  # noqa: E501
            (reset_epochs >= 1, "optimizer.neumann.resetEpochs", f"must be >= 1, got {reset_epochs}"),  # noqa: E501
            (weight_decay >= 0.0, "optimizer.weightDecay", f"must be >= 0, got {weight_decay}"),
            (momentum is None or 0.0 <= momentum < 1.0, "momentum", f"must lie in [0, 1), got {momentum}"),  # noqa: E501
        ]
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"{name}: {message}")
        param_list = list(params)
        if not param_list:
            raise ValueError("optimizer.name: neumann got an empty parameter list")
        for i, p in enumerate(param_list):
            if not p.requires_grad:
                raise ValueError(
                    f"optimizer.name: neumann needs a gradient for every parameter, and "
                    f"parameter #{i} (shape {tuple(p.shape)}) does not require one; pass only "
                    f"trainable parameters"
                )
        count = sum(p.numel() for p in param_list)
        defaults: dict[str, Any] = dict(
            lr=lr,
            alpha=alpha,
            beta=beta_per_param * count,
            gamma=gamma,
            weight_decay=weight_decay,
            momentum=momentum,
            sgd_warmup_epochs=sgd_warmup_epochs,
            # Schedule state lives in the (single) group so `state_dict` carries it.
            epoch=0,
            reset_interval=reset_epochs,
            next_reset=sgd_warmup_epochs,  # the first Neumann step is a reset
        )
        super().__init__(param_list, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("optimizer.name: neumann uses global norms: give one parameter group")

    def set_epoch(self, epoch: int) -> None:
        self.param_groups[0]["epoch"] = epoch

    def mu(self) -> float:
        group = self.param_groups[0]
        if group["momentum"] is not None:
            return float(group["momentum"])
        # DECIDE: t counts epochs (not steps) of the Neumann phase from 1, so μ climbs
        # 0.5, 0.67, 0.75, … and reaches 0.9 in the ninth Neumann epoch; counted in steps it would
        # reach 0.9 after nine steps and the schedule would mean nothing.
        t = float(group["epoch"] - group["sgd_warmup_epochs"] + 1)
        return min(max(1.0 - 1.0 / (1.0 + t), 0.5), 0.9)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ValueError("neumann: closures are not supported (one gradient per step)")
        group = self.param_groups[0]
        params: list[Tensor] = group["params"]
        for i, p in enumerate(params):
            if p.grad is None:
                raise ValueError(
                    f"optimizer.name: neumann: parameter #{i} has no gradient this step; every "
                    f"parameter must take part in the loss"
                )
            state = self.state[p]
            if not state:
                state["m"] = torch.zeros_like(p)
                # DECIDE: v starts at the initial weights and is averaged during the SGD
                # warm-up as well, so the regulariser sees the moving average of the iterates.
                state["v"] = p.detach().clone()
        lr, wd, gamma = group["lr"], group["weight_decay"], group["gamma"]
        grads = [p.grad if wd == 0.0 else p.grad + wd * p for p in params if p.grad is not None]
        ms = [self.state[p]["m"] for p in params]
        vs = [self.state[p]["v"] for p in params]
        epoch = group["epoch"]
        if epoch < group["sgd_warmup_epochs"]:
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-lr)
        elif epoch >= group["next_reset"]:
            # DECIDE: a reset restarts the momentum from the exported iterate: undo the
            # displacement μm (so w − μm is where training really is), then m = −ηg and the same
            # w update as any step. The exported point makes one plain SGD step; a reset that left
            # w alone would instead jump the exported point by +μηg (uphill).
            mu = self.mu()
            for p, g, m in zip(params, grads, ms, strict=True):
                p.add_(m, alpha=-mu)
                m.copy_(g).mul_(-lr)
                p.add_(m, alpha=mu).add_(g, alpha=-lr)
            group["next_reset"] = epoch + group["reset_interval"]
            group["reset_interval"] *= 2  # K doubles after each reset
        else:
            mu = self.mu()
            diff = [p - v for p, v in zip(params, vs, strict=True)]
            pull = regulariser_gradient(diff, group["alpha"], group["beta"])
            for p, g, m, reg in zip(params, grads, ms, pull, strict=True):
                d = g + reg
                m.mul_(mu).add_(d, alpha=-lr)
                p.add_(m, alpha=mu).add_(d, alpha=-lr)
        for p, v in zip(params, vs, strict=True):
            v.sub_(p).mul_(gamma).add_(p)  # v = w + γ(v − w)
        return None

    @contextmanager
    def exported_weights(self) -> Iterator[None]:
        """Hold w − μm in the parameters (for evaluation or export), then w again."""
        mu = self.mu()
        params: list[Tensor] = self.param_groups[0]["params"]
        shifts = [mu * self.state[p]["m"] if self.state[p] else None for p in params]
        with torch.no_grad():
            for p, s in zip(params, shifts, strict=True):
                if s is not None:
                    p.sub_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, shifts, strict=True):
                    if s is not None:
                        p.add_(s)
