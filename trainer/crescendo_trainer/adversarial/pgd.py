"""PGD: k projected signed-gradient steps in the L∞ ball (Madry et al., arXiv 1706.06083).

Owns the multi-step attack and the targeted-to-a-random-wrong-label variant that ConAdv uses
(Liu et al., arXiv 2106.00221: one step toward a random wrong label, ε = step = 9/255,
random start).
Runs on the unwrapped module in evaluation mode and returns a detached tensor. The operation order
is torchattacks' PGD, so with the random start off the oracle test asks for bit-identical results.
The random start draws from an explicit generator, so a worker thread reproduces the main
thread's draw exactly (ConAdv's τ = 0 check depends on it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crescendo_trainer.adversarial.fgsm import LossFn, check_epsilon
from crescendo_trainer.hessian import eval_mode, unwrap


def random_wrong_labels(
    labels: Tensor, num_classes: int, generator: torch.Generator | None = None
) -> Tensor:
    """A label ≠ y for each sample, uniform over the other `num_classes − 1`."""
    if num_classes < 2:
        raise ValueError(f"num_classes: a wrong label needs >= 2 classes, got {num_classes}")
    offset = torch.randint(
        1, num_classes, labels.shape, generator=generator, device=labels.device
    )
    return (labels + offset) % num_classes


def pgd(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    epsilon: float,
    step_size: float | None = None,
    steps: int = 1,
    random_start: bool = False,
    target: Tensor | None = None,
    generator: torch.Generator | None = None,
    loss_fn: LossFn = nn.functional.cross_entropy,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """L∞ PGD; ascends L(x, y), or descends L(x, target) when a target is given."""
    # x⁰ = x (or clamp(x + U(−ε, ε)) with the random start)
    # xᵏ⁺¹ = clamp(x + clamp(xᵏ + α·sign(∇ₓ J(xᵏ)) − x, −ε, ε), lo, hi)
    # with J = L(·, y) untargeted and J = −L(·, t) targeted; α defaults to ε.
    check_epsilon(epsilon)
    alpha = epsilon if step_size is None else step_size
    check_epsilon(alpha, "adversarial.stepSize")
    if steps < 1:
        raise ValueError(f"adversarial.steps: must be >= 1, got {steps}")
    module = unwrap(model)
    clean = inputs.clone().detach()
    adv = clean.clone().detach()
    if random_start:
        noise = torch.empty_like(adv).uniform_(-epsilon, epsilon, generator=generator)
        adv = torch.clamp(adv + noise, min=bounds[0], max=bounds[1]).detach()
    with eval_mode(module), torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            logits = module(adv)
            cost = -loss_fn(logits, target) if target is not None else loss_fn(logits, labels)
            (grad,) = torch.autograd.grad(cost, adv)
            adv = adv.detach() + alpha * grad.sign()
            delta = torch.clamp(adv - clean, min=-epsilon, max=epsilon)
            adv = torch.clamp(clean + delta, min=bounds[0], max=bounds[1]).detach()
    return adv
