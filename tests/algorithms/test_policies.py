"""Batch-size policies: decision tables, NaN guards, state round trips, AdaBatch arithmetic."""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest
import torch
from crescendo_spec.model import (
    AbsaSettings,
    AdaBatchSettings,
    Adversarial,
    Batch,
    GnsSettings,
    LearningRate,
)
from crescendo_trainer.lr import LrRule
from crescendo_trainer.measurements import MIN_OBSERVATIONS, Measurements
from crescendo_trainer.noise import MicroBatchNorms, NoiseScaleEstimator
from crescendo_trainer.policies import GradientNorms, Signals, build_policy
from crescendo_trainer.policies.absa import AbsaPolicy, AbsPolicy
from crescendo_trainer.policies.adabatch import AdaBatchPolicy, batch_at_epoch, optimizer_updates
from crescendo_trainer.policies.base import (
    CAPPED,
    CURVATURE,
    DURATION,
    HESSIAN_EIGENVALUE,
    HOLD,
    NOISE_SCALE,
    NOISE_SCALE_SIMPLE,
    NOT_FINITE,
    RAMP,
    REASON_CODES,
)
from crescendo_trainer.policies.gns import GnsPolicy


def epoch_end(epoch: int, batch: int, **measured: float) -> Signals:
    return Signals(
        step=epoch * 10 + 9,
        epoch=epoch,
        epoch_end=True,
        global_batch=batch,
        loss=1.0,
        measured=measured,
    )


# --- ABS / ABSA --------------------------------------------------------------------------------


def absa(**kw: float) -> AbsaPolicy:
    return AbsaPolicy(128, 1024, AbsaSettings(**kw), adversarial_ratio=0.2, total_epochs=40)


def test_absa_measures_eigenvalue_only_at_check_epochs() -> None:
    policy = absa(check_every_epochs=2)
    assert policy.measurements(5, 0, epoch_end=False) == frozenset()
    assert policy.measurements(9, 0, epoch_end=True) == frozenset()
    assert policy.measurements(19, 1, epoch_end=True) == {HESSIAN_EIGENVALUE}


@pytest.mark.parametrize(
    ("eigenvalues", "codes", "batches"),
    [
        # first λ is the reference; λ ≤ λ_ref/2 doubles B and becomes the new reference
        (
            [6.4, 4.0, 3.2, 1.7, 1.5],
            [HOLD, HOLD, CURVATURE, HOLD, CURVATURE],
            [128, 128, 256, 256, 512],
        ),
        # just above the threshold never fires
        ([6.4, 3.21, 3.2001], [HOLD, HOLD, HOLD], [128, 128, 128]),
    ],
)
def test_absa_curvature_trigger_table(
    eigenvalues: list[float], codes: list[str], batches: list[int]
) -> None:
    policy = absa()
    batch = 128
    for epoch, (lam, code, expected) in enumerate(zip(eigenvalues, codes, batches, strict=True)):
        decision = policy.decide(epoch_end(epoch, batch, hessian_eigenvalue=lam))
        assert decision.code == code, (epoch, decision)
        batch = decision.global_batch
        assert batch == expected


def test_absa_reason_names_the_rule_lambda_threshold_and_sizes() -> None:
    policy = absa()
    policy.decide(epoch_end(0, 256, hessian_eigenvalue=6.4))
    decision = policy.decide(epoch_end(1, 256, hessian_eigenvalue=3.1))
    assert decision.reason == "curvature rule: λ 3.1 ≤ 6.4/2 → 256→512"


@pytest.mark.parametrize("negative", [-3.8, -0.01, 0.0])
def test_absa_negative_curvature_never_grows_nor_becomes_the_reference(negative: float) -> None:
    policy = absa()
    first = policy.decide(epoch_end(0, 256, hessian_eigenvalue=negative))
    assert (first.code, first.global_batch) == (HOLD, 256) and "not positive" in first.reason
    assert policy.reference is None
    policy.decide(epoch_end(1, 256, hessian_eigenvalue=3.2))
    assert policy.reference == 3.2
    # λ = −3.8 against λ_ref 3.2 is no fall in curvature
    later = policy.decide(epoch_end(2, 256, hessian_eigenvalue=negative))
    assert (later.code, later.global_batch) == (HOLD, 256)
    assert policy.reference == 3.2


def test_absa_duration_rule_still_fires_when_curvature_is_negative() -> None:
    policy = absa()
    decisions = [policy.decide(epoch_end(e, 256, hessian_eigenvalue=-1.0)) for e in range(10)]
    assert [d.code for d in decisions] == [HOLD] * 9 + [DURATION]
    assert decisions[-1].reason.startswith("duration rule: 10 epochs")


def test_absa_duration_rule_grows_after_ten_epochs_and_keeps_reference() -> None:
    policy = absa()
    batch = 128
    codes = []
    for epoch in range(10):
        d = policy.decide(epoch_end(epoch, batch, hessian_eigenvalue=5.0))
        codes.append(d.code)
        batch = d.global_batch
    assert codes == [HOLD] * 9 + [DURATION] and batch == 256
    assert policy.reference == 5.0
    d = policy.decide(epoch_end(10, batch, hessian_eigenvalue=2.5))  # still vs the old λ_ref
    assert d.code == CURVATURE and d.global_batch == 512


def test_absa_cap_holds_with_capped_code() -> None:
    policy = absa()
    policy.decide(epoch_end(0, 1024, hessian_eigenvalue=4.0))
    d = policy.decide(epoch_end(1, 1024, hessian_eigenvalue=1.0))
    assert d.code == CAPPED and d.global_batch == 1024 and not d.changed


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_absa_nan_eigenvalue_or_loss_never_grows(bad: float) -> None:
    policy = absa(duration_epochs=1)
    policy.decide(epoch_end(0, 128, hessian_eigenvalue=4.0))
    d = policy.decide(epoch_end(1, 128, hessian_eigenvalue=bad))
    assert d.code == NOT_FINITE and d.global_batch == 128 and "not finite" in d.reason
    nan_loss = Signals(19, 1, True, 128, math.nan, {HESSIAN_EIGENVALUE: 0.1})
    assert policy.decide(nan_loss).global_batch == 128


def test_absa_adversarial_ratio_schedule() -> None:
    policy = absa()
    assert policy.adversarial_ratio(128, 0) == 0.2
    assert policy.adversarial_ratio(256, 3) == 0.1
    assert policy.adversarial_ratio(512, 3) == 0.05
    assert policy.adversarial_ratio(1024, 3) == 0.0  # at B_max
    assert policy.adversarial_ratio(128, 20) == 0.0  # after half of the 40 epochs
    abs_policy = AbsPolicy(128, 1024, AbsaSettings())
    assert abs_policy.adversarial_ratio(128, 0) == 0.0


def test_absa_state_dict_round_trip_continues_identically() -> None:
    a = absa()
    a.decide(epoch_end(0, 128, hessian_eigenvalue=6.4))
    a.decide(epoch_end(1, 128, hessian_eigenvalue=3.0))
    b = absa()
    b.load_state_dict(a.state_dict())
    for epoch in range(2, 14):
        sig = epoch_end(epoch, 256, hessian_eigenvalue=2.0 - 0.1 * epoch)
        assert a.decide(sig) == b.decide(sig)
    with pytest.raises(ValueError, match=r"batch\.policy cannot change"):
        AbsPolicy(128, 1024, AbsaSettings()).load_state_dict(a.state_dict())


# --- AdaBatch ------------------------------------------------------------------------------------


CIFAR = AdaBatchSettings(factor=2, resize_every_epochs=20)


def test_adabatch_update_counts_cifar_shaped_schedule() -> None:
    fixed = optimizer_updates(50_000, 100, lambda e: 128)
    adaptive = optimizer_updates(50_000, 100, lambda e: batch_at_epoch(e, 128, 2048, CIFAR))
    assert (fixed, adaptive) == (39_000, 15_080)
    assert fixed / adaptive == pytest.approx(2.586, abs=1e-3)


def test_adabatch_policy_follows_the_pure_schedule() -> None:
    policy = AdaBatchPolicy(128, 2048, CIFAR)
    batch, seen = 128, []
    for epoch in range(100):
        seen.append(batch)
        batch = policy.decide(epoch_end(epoch, batch)).global_batch
    assert seen == [batch_at_epoch(e, 128, 2048, CIFAR) for e in range(100)]


@pytest.mark.parametrize("maximum", [2048, 512])  # 512: the capped case
def test_adabatch_lr_over_batch_equals_fixed_schedule_every_epoch(maximum: int) -> None:
    # Linear scaling + the fixed schedule's step decay (γ = 0.375 every 20 epochs): the LR moves
    # by β·γ = 0.75 at a resize, and lr/B is the fixed-batch schedule's lr/B0 at every epoch,
    # including after B stops at the cap.
    spec = LearningRate(
        base=0.1, scaling="linear", decay_epochs=[20, 40, 60, 80], decay_factor=0.375
    )
    rule = LrRule.from_spec(spec, 128)
    for epoch in range(100):
        b = batch_at_epoch(epoch, 128, maximum, CIFAR)
        assert rule(10_000, epoch, b) / b == pytest.approx(
            rule(10_000, epoch, 128) / 128, rel=1e-12
        )
    assert rule(0, 20, 256) / rule(0, 19, 128) == pytest.approx(0.75)


def test_one_step_at_2b_equals_two_accumulated_steps_at_b() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    ce = torch.nn.functional.cross_entropy
    ce(model(x), y).backward()  # type: ignore[no-untyped-call]
    for half in (slice(0, 32), slice(32, 64)):
        (ce(twin(x[half]), y[half]) / 2).backward()  # type: ignore[no-untyped-call]
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


# --- GNS -----------------------------------------------------------------------------------------


def test_noise_scale_estimator_recovers_synthetic_b_simple() -> None:
    # Per-sample gradients G + ξ with ξ ~ N(0, σ²I) in d dims: B_simple = dσ²/|G|². Each step
    # of B = 32 is two micro-batches of 16, accumulated as the job does (mean × n/B).
    gen = torch.Generator().manual_seed(0)
    d, sigma, b = 200, 2.0, 16
    true_g = torch.full((d,), 0.5)
    expected = d * sigma**2 / float(true_g @ true_g)  # 16.0
    estimator, micro = NoiseScaleEstimator(ema=0.99), MicroBatchNorms()
    for _ in range(2000):
        accumulated = torch.zeros(d)
        for _ in range(2):
            accumulated += (true_g + sigma * torch.randn(b, d, generator=gen)).mean(0) * b / 32
            micro.after_micro([accumulated], b, 32)
        norms = micro.step_norms(32)
        assert norms is not None and (norms.local_batch, norms.global_batch) == (16, 32)
        estimator.update(norms)
    assert estimator.b_simple == pytest.approx(expected, rel=0.15)


def test_one_micro_batch_gives_no_pair() -> None:
    micro = MicroBatchNorms()
    micro.after_micro([torch.ones(3)], 8, 8)
    assert micro.step_norms(8) is None
    assert micro.step_norms(8) is None, "reset after each step"


def gns(**kw: object) -> GnsPolicy:
    return GnsPolicy(128, 4096, GnsSettings(cooldown_steps=50, **kw))


def settled(b_simple: float) -> dict[str, float]:
    """What the measurements hand a policy once the estimate has settled."""
    return {NOISE_SCALE_SIMPLE: b_simple}


def at_step(step: int, batch: int, b_simple: float | None = None) -> Signals:
    measured = {} if b_simple is None else settled(b_simple)
    return Signals(step=step, epoch=0, epoch_end=False, global_batch=batch, loss=1.0,
                   measured=measured)


@pytest.mark.parametrize(
    ("b_simple", "batch", "code", "expected"),
    [
        (1000.0, 128, NOISE_SCALE, 512),  # largest 128·2ᵏ ≤ 1000
        (300.0, 128, NOISE_SCALE, 256),
        (200.0, 128, HOLD, 128),  # 256 > B_simple: never past the noise scale
        (9000.0, 4096, CAPPED, 4096),
        (100.0, 512, HOLD, 512),  # never shrinks by default
    ],
)
def test_gns_decision_table(b_simple: float, batch: int, code: str, expected: int) -> None:
    d = gns().decide(at_step(100, batch, b_simple))
    assert (d.code, d.global_batch) == (code, expected), d.reason


def test_gns_minimum_gain_and_cooldown() -> None:
    policy = gns(min_gain=0.5)
    # 128→256: gain (1+300/128)/(1+300/256) − 1 = 54%
    assert policy.decide(at_step(100, 128, 300.0)).global_batch == 256
    assert policy.decide(at_step(120, 256, 300.0)).reason == "cooldown"
    d = gns(min_gain=0.6).decide(at_step(100, 128, 300.0))
    assert d.code == HOLD and "too small" in d.reason


def test_gns_shrinks_only_when_configured() -> None:
    d = gns(allow_shrink=True).decide(at_step(100, 1024, 100.0))
    assert (d.code, d.global_batch) == (NOISE_SCALE, 128)  # smallest ≥ max(B_simple, B0)


def test_gns_holds_until_the_noise_scale_is_offered_and_refuses_nan() -> None:
    policy = gns()
    assert policy.decide(at_step(100, 128)).code == HOLD
    assert policy.decide(Signals(100, 0, False, 128, math.nan)).code == NOT_FINITE
    assert policy.decide(at_step(100, 128, math.nan)).code == NOT_FINITE


def exact_norms(b_simple: float) -> GradientNorms:
    # Norms whose estimate is exactly b_simple: |G|² = 1, tr Σ = b_simple (b = 32, B = 64).
    return GradientNorms(1 + b_simple / 32, 1 + b_simple / 64, 32, 64)


def test_noise_scale_is_offered_to_the_policy_only_once_it_has_settled() -> None:
    measurements = Measurements(gns(), Batch(policy="gns"))
    assert measurements.settled_after == max(MIN_OBSERVATIONS, 40)  # two horizons at ema 0.95
    for _ in range(measurements.settled_after - 1):
        measurements.noise.update(exact_norms(1000.0))
    assert measurements.take(100, 0, False) == {}
    measurements.noise.update(exact_norms(1000.0))
    assert measurements.take(100, 0, False) == {NOISE_SCALE_SIMPLE: pytest.approx(1000.0)}


def test_a_negative_gradient_norm_estimate_is_offered_as_nan_and_holds() -> None:
    measurements = Measurements(gns(), Batch(policy="gns"))
    for _ in range(measurements.settled_after):  # |G|² estimate below zero: noise dominates
        measurements.noise.update(GradientNorms(1.0, 0.1, 32, 64))
    measured = measurements.take(100, 0, False)
    assert math.isnan(measured[NOISE_SCALE_SIMPLE])
    signals = Signals(100, 0, False, 128, 1.0, measured)
    assert gns().decide(signals).code == NOT_FINITE


def test_noise_estimate_is_restart_state_and_round_trips() -> None:
    a = Measurements(gns(), Batch(policy="gns"))
    for _ in range(a.settled_after):
        a.noise.update(exact_norms(700.0))
    b = Measurements(gns(), Batch(policy="gns"))
    b.load_state_dict(a.state_dict())
    assert b.take(100, 0, False) == a.take(100, 0, False)
    policy = gns()
    policy.load_state_dict(gns().state_dict())
    assert policy.decide(at_step(100, 128, 700.0)) == gns().decide(at_step(100, 128, 700.0))


# --- registry ------------------------------------------------------------------------------------


def test_build_policy_registers_every_policy_and_codes_are_known() -> None:
    # Every name the spec's Literal allows, so one build_policy does not know fails; a policy
    # whose section has a required choice gets a valid one.
    settings: dict[str, dict[str, Any]] = {"schedule": {"schedule": {"rampUnits": "1M"}}}
    for name in get_args(Batch.model_fields["policy"].annotation):
        batch = Batch.model_validate({"policy": name, **settings.get(name, {})})
        built = build_policy(batch, epochs=10, adversarial=Adversarial(ratio=0.3))
        assert built.name == name
    absa_policy = build_policy(Batch(policy="absa"), epochs=10, adversarial=Adversarial(ratio=0.3))
    assert absa_policy.adversarial_ratio(128, 0) == 0.3
    assert {HOLD, CURVATURE, DURATION, NOISE_SCALE, CAPPED, NOT_FINITE, RAMP} <= set(REASON_CODES)
