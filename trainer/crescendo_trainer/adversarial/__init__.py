"""Adversarial training: FGSM and PGD attacks, ABSA's in-batch mixing, and ConAdv's pipeline."""

from __future__ import annotations

from crescendo_trainer.adversarial.conadv import (
    AdversarialBatch,
    AttackFn,
    ConAdv,
    adversarial_loss,
    conadv_attack,
)
from crescendo_trainer.adversarial.fgsm import check_epsilon, fgsm
from crescendo_trainer.adversarial.mixing import MixedBatch, mix_fgsm, perturbed_mask
from crescendo_trainer.adversarial.pgd import pgd, random_wrong_labels

__all__ = [
    "AdversarialBatch",
    "AttackFn",
    "ConAdv",
    "MixedBatch",
    "adversarial_loss",
    "check_epsilon",
    "conadv_attack",
    "fgsm",
    "mix_fgsm",
    "perturbed_mask",
    "pgd",
    "random_wrong_labels",
]
