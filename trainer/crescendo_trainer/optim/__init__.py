"""Optimizers by name (`spec.optimizer.name`): sgd, neumann, lars, lamb."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from crescendo_spec.model import Optimizer as OptimizerSpec
from torch import Tensor

from crescendo_trainer.optim.lamb import Lamb
from crescendo_trainer.optim.lars import Lars
from crescendo_trainer.optim.neumann import Neumann

__all__ = ["OPTIMIZERS", "Lamb", "Lars", "Neumann", "build_optimizer"]

OPTIMIZERS = ("sgd", "neumann", "lars", "lamb")


def build_optimizer(
    spec_optimizer: OptimizerSpec, params: Iterable[Tensor], lr: float
) -> torch.optim.Optimizer:
    """The optimizer `spec_optimizer.name` names, at learning rate `lr`.

    For LARS, BatchNorm weights and biases (every tensor of one dimension or less) form a group
    without layer-wise scaling and without weight decay, as LARS's authors and ConAdv do.
    """
    name = spec_optimizer.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    s = spec_optimizer
    trainable = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            trainable, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.nesterov
        )
    if name == "neumann":
        n = s.neumann
        return Neumann(
            trainable,
            lr,
            alpha=n.alpha,
            beta_per_param=n.beta_per_param,
            gamma=n.gamma,
            sgd_warmup_epochs=n.sgd_warmup_epochs,
            reset_epochs=n.reset_epochs,
            weight_decay=s.weight_decay,
        )
    if name == "lars":
        scaled = [p for p in trainable if p.ndim > 1]
        excluded = [p for p in trainable if p.ndim <= 1]
        groups: list[dict[str, Any]] = [{"params": scaled}]
        if excluded:
            groups.append({"params": excluded, "lars": False, "weight_decay": 0.0})
        return Lars(
            groups,
            lr,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            trust_coefficient=s.trust_coefficient,
            nesterov=s.nesterov,
        )
    return Lamb(trainable, lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)
