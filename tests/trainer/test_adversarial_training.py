"""The trainer's adversarial rule: who sets the share, which attack, which rows."""

from __future__ import annotations

import pytest
import torch
from crescendo_spec import SpecError, parse_spec
from crescendo_spec.model import AbsaSettings, Adversarial
from crescendo_trainer.adversarial.training import AdversarialTraining
from crescendo_trainer.policies.absa import AbsaPolicy
from crescendo_trainer.policies.fixed import FixedPolicy
from torch import nn


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_absa_policy_sets_the_share_and_halves_it_at_each_increase() -> None:
    policy = AbsaPolicy(32, 256, AbsaSettings(), adversarial_ratio=0.2, total_epochs=10)
    rule = AdversarialTraining(Adversarial(method="fgsm"), policy, block=32, seed=0)
    assert [rule.ratio(b, 0) for b in (32, 64, 128)] == [0.2, 0.1, 0.05]
    assert rule.ratio(256, 0) == 0.0, "no adversarial samples once B = B_max"
    assert rule.ratio(32, 5) == 0.0, "none after half the epochs"


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_exactly_the_first_share_of_each_block_is_perturbed(method: str) -> None:
    spec = Adversarial(method=method, epsilon=0.1, ratio=0.25, steps=2)
    rule = AdversarialTraining(spec, FixedPolicy(8, 8), block=8, seed=0)
    x, y = torch.rand(16, 1, 4, 4) * 0.8 + 0.1, torch.randint(0, 3, (16,))
    out = rule.apply(model(), x, y, rule.ratio(16, 0), step=3, num_classes=3)
    changed = (out != x).flatten(1).any(dim=1)
    assert changed.tolist() == [True, True] + [False] * 6 + [True, True] + [False] * 6
    assert float((out - x).abs().max()) <= 0.1 + 1e-6


def test_no_attack_without_a_method_or_a_policy_share() -> None:
    rule = AdversarialTraining(Adversarial(), FixedPolicy(8, 8), block=8, seed=0)
    x = torch.rand(8, 1, 4, 4)
    assert rule.ratio(8, 0) == 0.0
    assert rule.apply(model(), x, torch.zeros(8, dtype=torch.long), 0.0, 0, 3) is x


def test_conadv_trains_on_a_whole_adversarial_copy_so_it_replaces_no_rows() -> None:
    rule = AdversarialTraining(Adversarial(method="conadv"), FixedPolicy(8, 8), block=8, seed=0)
    x = torch.rand(8, 1, 4, 4)
    assert rule.ratio(8, 0) == 0.5
    assert rule.apply(model(), x, torch.zeros(8, dtype=torch.long), 0.5, 0, 3) is x


@pytest.mark.parametrize("method", ["pgd", "conadv"])
def test_absa_with_another_attack_is_refused_naming_both_fields(method: str) -> None:
    spec = {"maxSteps": 10, "batch": {"policy": "absa", "initial": 32, "max": 64},
            "adversarial": {"method": method}}
    with pytest.raises(SpecError, match=rf"adversarial\.method '{method}' .* batch\.policy 'absa'"):
        parse_spec(spec)
    parse_spec({**spec, "adversarial": {"method": "fgsm"}})
