"""FGSM/PGD against torchattacks, and ABSA's mixing: eval mode, BN stats, exact counts."""

from __future__ import annotations

import math

import pytest
import torch
import torchattacks
from crescendo_spec.model import JobSpec
from crescendo_trainer.adversarial import (
    fgsm,
    mix_fgsm,
    perturbed_mask,
    pgd,
    random_wrong_labels,
)
from pydantic import ValidationError
from torch import Tensor, nn


@pytest.fixture()
def batch(digits: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    x, y = digits
    return x[:96], y[:96]


def test_fgsm_identical_to_torchattacks(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    ours = fgsm(trained_cnn, x, y, epsilon=0.03)
    theirs = torchattacks.FGSM(trained_cnn, eps=0.03)(x, y)
    assert torch.equal(ours, theirs)
    assert (ours - x).abs().max() <= 0.03 + 1e-7 and (ours != x).any()


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_identical_to_torchattacks_without_random_start(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor], steps: int
) -> None:
    x, y = batch
    ours = pgd(trained_cnn, x, y, epsilon=0.05, step_size=0.01, steps=steps)
    theirs = torchattacks.PGD(trained_cnn, eps=0.05, alpha=0.01, steps=steps, random_start=False)(
        x, y
    )
    assert torch.equal(ours, theirs)


def test_targeted_pgd_identical_to_torchattacks(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    target = random_wrong_labels(y, 10, torch.Generator().manual_seed(3))
    assert (target != y).all() and ((target >= 0) & (target < 10)).all()
    attack = torchattacks.PGD(trained_cnn, eps=9 / 255, alpha=9 / 255, steps=1, random_start=False)
    attack.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
    ours = pgd(trained_cnn, x, y, epsilon=9 / 255, steps=1, target=target)
    assert torch.equal(ours, attack(x, y))


def test_random_start_stays_in_ball_and_follows_generator(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    a = pgd(
        trained_cnn,
        x,
        y,
        epsilon=0.05,
        random_start=True,
        generator=torch.Generator().manual_seed(1),
    )
    b = pgd(
        trained_cnn,
        x,
        y,
        epsilon=0.05,
        random_start=True,
        generator=torch.Generator().manual_seed(1),
    )
    c = pgd(
        trained_cnn,
        x,
        y,
        epsilon=0.05,
        random_start=True,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - x).abs().max() <= 0.05 + 1e-6 and a.min() >= 0 and a.max() <= 1


def test_attack_leaves_batchnorm_stats_mode_and_weight_grads(
    trained_cnn: nn.Sequential, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    trained_cnn.train()
    trained_cnn.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    fgsm(trained_cnn, x, y, epsilon=0.01)
    pgd(trained_cnn, x, y, epsilon=0.01, steps=3, random_start=True)
    mix_fgsm(trained_cnn, x, y, ratio=0.2, block=32, epsilon=0.01)
    assert trained_cnn.training and trained_cnn[1].training
    for k, v in trained_cnn.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} moved"
    assert all(p.grad is None for p in trained_cnn.parameters())


@pytest.mark.parametrize(
    ("batch_size", "block", "ratio"),
    [(128, 128, 0.2), (256, 128, 0.2), (300, 128, 0.1), (64, 128, 0.5), (128, 128, 0.0)],
)
def test_mixing_perturbs_exactly_floor_r_b0_per_block(
    trained_cnn: nn.Module, digits: tuple[Tensor, Tensor], batch_size: int, block: int, ratio: float
) -> None:
    x, y = digits[0][:batch_size], digits[1][:batch_size]
    mixed = mix_fgsm(trained_cnn, x, y, ratio=ratio, block=block, epsilon=0.005)
    full, rest = divmod(batch_size, block)
    expected = full * math.floor(ratio * block) + math.floor(ratio * rest)
    assert mixed.count == expected == int(mixed.perturbed.sum())
    changed = (mixed.inputs != x).flatten(1).any(1)
    assert not changed[~mixed.perturbed].any()  # clean rows untouched
    for start in range(0, batch_size, block):  # the first ⌊r·B0⌋ of each block
        n = math.floor(ratio * min(block, batch_size - start))
        assert mixed.perturbed[start : start + n].all()
        assert not mixed.perturbed[start + n : start + block].any()
    assert not mixed.inputs.requires_grad and mixed.inputs.grad_fn is None


def test_mixed_rows_equal_fgsm_of_those_rows(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    mixed = mix_fgsm(trained_cnn, x, y, ratio=0.25, block=32, epsilon=0.005)
    whole = fgsm(trained_cnn, x, y, epsilon=0.005)
    assert torch.equal(mixed.inputs[mixed.perturbed], whole[mixed.perturbed])


def test_no_gradient_flows_through_adversarial_inputs(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    x = x.clone().requires_grad_(True)
    adv = fgsm(trained_cnn, x, y, epsilon=0.01)
    assert adv.grad_fn is None and not adv.requires_grad


def test_bad_attack_settings_name_the_field(
    trained_cnn: nn.Module, batch: tuple[Tensor, Tensor]
) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=r"adversarial\.epsilon"):
        fgsm(trained_cnn, x, y, epsilon=-0.1)
    with pytest.raises(ValueError, match=r"adversarial\.epsilon"):
        pgd(trained_cnn, x, y, epsilon=-0.1)
    with pytest.raises(ValueError, match=r"adversarial\.steps"):
        pgd(trained_cnn, x, y, epsilon=0.1, steps=0)
    with pytest.raises(ValueError, match=r"adversarial\.ratio"):
        perturbed_mask(10, 1.5, 4)
    with pytest.raises(ValidationError, match="epsilon"):
        JobSpec.model_validate({"epochs": 1, "adversarial": {"epsilon": -0.1}})
    with pytest.raises(ValidationError, match="staleness"):
        JobSpec.model_validate({"epochs": 1, "adversarial": {"staleness": -1}})
    with pytest.raises(ValidationError, match="kappa"):
        JobSpec.model_validate({"epochs": 1, "batch": {"absa": {"kappa": 1.0}}})
    with pytest.raises(ValidationError, match="name"):
        JobSpec.model_validate({"epochs": 1, "optimizer": {"name": "adamw"}})
