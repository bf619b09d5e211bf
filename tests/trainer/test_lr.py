"""The learning-rate rule: batch scaling, warm-up, step decay."""

from __future__ import annotations

import math

import pytest
from crescendo_spec.model import LearningRate
from crescendo_trainer.lr import LrRule


def rule(**fields: object) -> LrRule:
    return LrRule.from_spec(LearningRate.model_validate(fields), initial_batch=128)


@pytest.mark.parametrize(
    ("scaling", "expected"), [("linear", 0.4), ("sqrt", 0.2), ("none", 0.1)]
)
def test_lr_follows_the_batch_by_the_chosen_rule(scaling: str, expected: float) -> None:
    assert rule(base=0.1, scaling=scaling)(step=100, epoch=0, global_batch=512) == pytest.approx(
        expected
    )


def test_linear_rule_keeps_lr_over_batch_constant_across_doublings() -> None:
    r = rule(base=0.1, scaling="linear")
    ratios = {r(10, 0, b) / b for b in (128, 256, 512, 1024)}
    assert max(ratios) - min(ratios) < 1e-15


def test_warmup_rises_linearly_then_holds() -> None:
    r = rule(base=1.0, scaling="none", warmupSteps=4)
    assert [r(s, 0, 128) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_step_decay_applies_at_each_listed_epoch() -> None:
    r = rule(base=1.0, scaling="none", decayEpochs=[30, 60], decayFactor=0.2)
    assert r(0, 29, 128) == 1.0
    assert r(0, 30, 128) == pytest.approx(0.2)
    assert r(0, 75, 128) == pytest.approx(0.04)


def test_reference_batch_defaults_to_the_initial_batch() -> None:
    assert rule(base=0.1).reference_batch == 128
    assert math.isclose(rule(base=0.1, referenceBatch=256)(0, 0, 256), 0.1)
