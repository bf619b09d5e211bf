"""ABSA's in-batch adversarial mixing (Yao et al., arXiv 1810.01021; code HessianFlow).

Owns which samples of a micro-batch are replaced by FGSM examples. The paper works in blocks of
B0 samples (its base batch): in every block the first ⌊r·B0⌋ samples are replaced by their FGSM
copies, so the share r holds at every batch size. The ratio r itself comes from the policy
(`BatchSizePolicy.adversarial_ratio`: halved at every batch increase, 0 at B_max or after half the
epochs).

DECIDE: a trailing block shorter than B0 (a local batch that is not a multiple of B0) gets
⌊r·n⌋ of its n samples, which keeps the share and makes the count a pure function of the sizes.
The attack runs in eval mode on the selected rows only; in eval mode a sample's logits do not
depend on the rest of the batch, so this equals attacking the whole batch and keeping those rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crescendo_trainer.adversarial.fgsm import LossFn, check_epsilon, fgsm


@dataclass(frozen=True)
class MixedBatch:
    inputs: Tensor  # the micro-batch with the selected rows replaced (detached)
    perturbed: Tensor  # bool mask over the rows
    count: int  # number of perturbed rows


def perturbed_mask(batch: int, ratio: float, block: int) -> Tensor:
    """Rows to perturb: the first ⌊r·B0⌋ of every block of B0 (⌊r·n⌋ in a short last block)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"adversarial.ratio: must lie in [0, 1], got {ratio}")
    if block < 1:
        raise ValueError(f"batch.initial (B0, the mixing block): must be >= 1, got {block}")
    mask = torch.zeros(batch, dtype=torch.bool)
    for start in range(0, batch, block):
        size = min(block, batch - start)
        mask[start : start + math.floor(ratio * size)] = True
    return mask


def mix_fgsm(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    ratio: float,
    block: int,
    epsilon: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> MixedBatch:
    """The micro-batch with ABSA's share of FGSM examples in place of the clean ones."""
    check_epsilon(epsilon)
    mask = perturbed_mask(inputs.shape[0], ratio, block).to(inputs.device)
    count = int(mask.sum())
    if count == 0:
        return MixedBatch(inputs.detach(), mask, 0)
    adv = fgsm(
        model, inputs[mask], labels[mask], epsilon=epsilon, loss_fn=loss_fn, bounds=bounds
    )
    mixed = inputs.detach().clone()
    mixed[mask] = adv
    return MixedBatch(mixed, mask, count)
