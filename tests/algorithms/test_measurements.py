"""The measurements a policy is handed: the Hessian's λ averaged over seeded batches, through the
loss closure, and nothing taken that the policy did not ask for."""

from __future__ import annotations

import pytest
import torch
from crescendo_spec.model import AbsaSettings, Batch
from crescendo_trainer.hessian import measure_top_eigenvalue
from crescendo_trainer.measurements import CurvatureProbe, Measurements
from crescendo_trainer.policies import build_policy
from crescendo_trainer.policies.base import HESSIAN_EIGENVALUE, HESSIAN_TRACE
from torch import nn


def probe(samples: int) -> CurvatureProbe:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(samples, 8), torch.randint(0, 3, (samples,))
    return CurvatureProbe(model, nn.functional.cross_entropy, x, y)


def test_lambda_is_the_mean_over_the_configured_seeded_batches() -> None:
    settings = AbsaSettings(hessian_batch=32, hessian_batches=3)
    batch = Batch(policy="abs", absa=settings)
    measurements = Measurements(build_policy(batch), batch)
    measurements.probe = probe(96)
    measured = measurements.take(step=10, epoch=0, epoch_end=True)
    p = measurements.probe
    one_by_one = [
        measure_top_eigenvalue(p.model, p.loss_fn, x, y, settings, seed=0).value
        for x, y in zip(p.inputs.chunk(3), p.targets.chunk(3), strict=True)
    ]
    assert len(set(one_by_one)) == 3, "three different batches"
    assert measured[HESSIAN_EIGENVALUE] == pytest.approx(sum(one_by_one) / 3)
    assert HESSIAN_TRACE in measured


def test_nothing_is_measured_that_the_policy_does_not_ask_for() -> None:
    batch = Batch(policy="abs")
    measurements = Measurements(build_policy(batch), batch)
    assert measurements.take(step=10, epoch=0, epoch_end=False) == {}  # not an epoch end
    fixed = Batch(policy="fixed")
    assert Measurements(build_policy(fixed), fixed).take(10, 0, True) == {}


def test_a_curvature_policy_without_a_loss_closure_says_what_to_give() -> None:
    batch = Batch(policy="abs")
    measurements = Measurements(build_policy(batch), batch)
    with pytest.raises(ValueError, match="measure_curvature_with"):
        measurements.take(step=10, epoch=0, epoch_end=True)
