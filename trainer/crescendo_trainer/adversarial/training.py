"""Which samples of a micro-batch the trainer replaces by adversarial ones, and how.

Owns the rule that joins the spec and the policy: ABSA's policy sets the share itself
(`adversarial_ratio`, halved at every batch increase) and uses FGSM, as the paper does; otherwise
`adversarial.method` fgsm or pgd perturbs `adversarial.ratio` of every block of B0 samples. The
first ⌊r·B0⌋ rows of each block are replaced (mixing.perturbed_mask), attacks run on the
unwrapped module in eval mode and no gradient flows through them into the weight update.
ConAdv (adversarial examples from stale weights, computed concurrently) replaces no rows: it
trains on the clean batch and an adversarial copy of all of it (feed.py), ratio ½.
"""

from __future__ import annotations

import torch
from crescendo_spec.model import Adversarial
from torch import Tensor, nn

from crescendo_trainer.adversarial.feed import CONADV_RATIO
from crescendo_trainer.adversarial.mixing import mix_fgsm, perturbed_mask
from crescendo_trainer.adversarial.pgd import pgd, random_wrong_labels
from crescendo_trainer.policies.base import BatchSizePolicy


class AdversarialTraining:
    def __init__(self, spec: Adversarial, policy: BatchSizePolicy, block: int, seed: int) -> None:
        self.spec, self.policy, self.block, self.seed = spec, policy, block, seed

    def ratio(self, global_batch: int, epoch: int) -> float:
        """The share of each block of B0 samples perturbed at this batch size and epoch."""
        from_policy = self.policy.adversarial_ratio(global_batch, epoch)
        if from_policy is not None:
            return from_policy
        if self.spec.method == "conadv":
            return CONADV_RATIO
        return self.spec.ratio if self.spec.method in ("fgsm", "pgd") else 0.0

    def apply(
        self, module: nn.Module, x: Tensor, y: Tensor, ratio: float, step: int, num_classes: int
    ) -> Tensor:
        """`x` with its share of rows replaced by adversarial examples (ConAdv's copies are made
        by its own pipeline, feed.py, and leave `x` as it is)."""
        if ratio <= 0.0 or self.spec.method == "conadv":
            return x
        if self.spec.method != "pgd":  # ABSA and fgsm
            return mix_fgsm(module, x, y, ratio=ratio, block=self.block,
                            epsilon=self.spec.epsilon).inputs
        mask = perturbed_mask(x.shape[0], ratio, self.block).to(x.device)
        if not bool(mask.any()):
            return x
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        target = (
            random_wrong_labels(y[mask], num_classes, generator) if self.spec.targeted else None
        )
        mixed = x.detach().clone()
        mixed[mask] = pgd(
            module, x[mask], y[mask], epsilon=self.spec.epsilon, step_size=self.spec.step_size,
            steps=self.spec.steps, random_start=self.spec.random_start, target=target,
            generator=generator,
        )
        return mixed
