"""FGSM: the one-step L∞ attack (Goodfellow, Shlens, Szegedy, arXiv 1412.6572).

Owns the attack ABSA mixes into its batches (Yao et al., arXiv 1810.01021, ε = 0.005). The attack
runs on the unwrapped module in evaluation mode (BatchNorm statistics do not move, dropout is off),
touches no parameter's `.grad`, and returns a tensor detached from every graph, so no gradient
flows through x_adv into the weight update. The operation order is torchattacks' FGSM, so the
oracle test can ask for bit-identical results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from crescendo_trainer.hessian import eval_mode, unwrap

LossFn = Callable[[Tensor, Tensor], Tensor]


def check_epsilon(epsilon: float, field: str = "adversarial.epsilon") -> None:
    """Reject a negative or non-finite radius, naming the spec field."""
    if not (epsilon >= 0.0 and epsilon != float("inf")):
        raise ValueError(f"{field}: must be a finite number >= 0, got {epsilon}")


def fgsm(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    target: Tensor | None = None,
    loss_fn: LossFn = nn.functional.cross_entropy,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """`clamp(x + ε·sign(∇x L(w; x, y)), lo, hi)`; toward `target` (descending) when given."""
    # Untargeted: x_adv = clamp(x + ε·sign(∇ₓ L(x, y))).
    # Targeted:   x_adv = clamp(x + ε·sign(∇ₓ[−L(x, t)])), i.e. one signed step down the loss of
    #             the target label t.
    check_epsilon(epsilon)
    module = unwrap(model)
    x = inputs.clone().detach().requires_grad_(True)
    with eval_mode(module), torch.enable_grad():
        logits = module(x)
        cost = -loss_fn(logits, target) if target is not None else loss_fn(logits, labels)
        (grad,) = torch.autograd.grad(cost, x)
    adv = x.detach() + epsilon * grad.sign()
    return torch.clamp(adv, min=bounds[0], max=bounds[1]).detach()
