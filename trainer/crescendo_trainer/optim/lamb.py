"""LAMB: layer-wise adaptive moments (You et al., arXiv 1904.00962, v3 without debiasing).

Owns the update. Per parameter tensor, with Adam's moments and no bias correction:
    m = β₁m + (1 − β₁)g,  v = β₂v + (1 − β₂)g²
    r = m / (√v + ε) + λ·w                       (λ the weight decay)
    w = w − lr·(‖w‖ / ‖r‖)·r                     (trust ratio 1 where either norm is 0)
The paper's optional clamp of ‖w‖ is not applied (ALGORITHMS.md §6 gives the plain formula).
Oracle: torch-optimizer's Lamb with debias=False (and a clamp that never binds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"learningRate.base: must be > 0, got {lr}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"optimizer.betas[{i}]: must lie in [0, 1), got {beta}")
        if not eps > 0.0:
            raise ValueError(f"optimizer.eps: must be > 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"optimizer.weightDecay: must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                r = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] != 0.0:
                    r.add_(p, alpha=group["weight_decay"])
                w_norm, r_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(r)
                trust = w_norm / r_norm if w_norm > 0 and r_norm > 0 else torch.ones(())
                # lr·trust folded into one float32 scalar first, as torch-optimizer does: a
                # parameter with a near-zero gradient (a conv bias before BatchNorm) has a huge
                # trust ratio, and a different rounding order shows up at 1e-4 after a few steps.
                p.add_(r, alpha=float(-group["lr"] * trust))
        return loss
