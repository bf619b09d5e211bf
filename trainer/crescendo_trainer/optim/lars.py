"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg, arXiv 1708.03888).

Owns the update ConAdv trains with (trust 0.001, momentum 0.9, BatchNorm and bias excluded).
Per parameter tensor of a LARS group:
    trust = η·‖w‖ / (‖g‖ + wd·‖w‖ + ε)          (η the trust coefficient)
    u = trust·(g + wd·w),  buf = μ·buf + u,  w = w − lr·buf
A tensor with ‖w‖ = 0 or ‖g‖ = 0 (a fresh zero-initialised layer) takes the plain step u = g.
Tensors of an excluded group (`lars=False`: BatchNorm weights and every bias, chosen by
`build_optimizer`) take plain momentum SGD without weight decay. This is torch-optimizer's LARS
for groups with weight decay, the test oracle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


class Lars(Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        nesterov: bool = False,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"learningRate.base: must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer.momentum: must lie in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"optimizer.weightDecay: must be >= 0, got {weight_decay}")
        if not trust_coefficient > 0.0:
            raise ValueError(
                f"optimizer.trustCoefficient: must be > 0, got {trust_coefficient}"
            )
        if nesterov and momentum == 0.0:
            raise ValueError("optimizer.nesterov: needs optimizer.momentum > 0")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            nesterov=nesterov,
            lars=True,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, mu = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["lars"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                    if w_norm > 0 and g_norm > 0:
                        # Same operation order as torch-optimizer, so the oracle test can
                        # ask for 1e-6 after many steps rather than for a loose tolerance.
                        trust = w_norm / (g_norm + w_norm * wd + group["eps"])
                        trust *= group["trust_coefficient"]
                        update = p.grad.add(p, alpha=wd).mul_(trust)
                if mu != 0.0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = update.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(update)
                    buf = state["momentum_buffer"]
                    update = update + mu * buf if group["nesterov"] else buf
                p.add_(update, alpha=-group["lr"])
        return loss
