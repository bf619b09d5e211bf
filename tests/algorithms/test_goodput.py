"""The `goodput` policy and its throughput model: fit, priors, decision table, the unschedulable
cap, determinism and restart state."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import pytest
from crescendo_spec.model import Batch, GoodputSettings, Replicas, Scaling
from crescendo_trainer.batching import layout
from crescendo_trainer.policies import Decision, Signals, build_policy
from crescendo_trainer.policies.base import (
    CAPPED,
    GOODPUT,
    HOLD,
    NOISE_SCALE_SIMPLE,
    NOT_FINITE,
    REASON_CODES,
)
from crescendo_trainer.policies.goodput import GoodputPolicy
from crescendo_trainer.throughput import (
    CONFIGURATIONS,
    PER_CONFIGURATION,
    WARMUP_STEPS,
    ThroughputModel,
)


@dataclass(frozen=True)
class Truth:
    """Known step-time parameters (seconds) of Pollux's model, to fit and to decide against."""

    alpha_grad: float = 0.01
    beta_grad: float = 0.001
    alpha_sync: float = 0.001
    beta_sync: float = 0.0005

    def seconds(self, replicas: int, micro: int, accumulation: int) -> float:
        sync = 0.0 if replicas == 1 else self.alpha_sync + self.beta_sync * (replicas - 1)
        return accumulation * (self.alpha_grad + self.beta_grad * micro) + sync


CHEAP = Truth()
EXPENSIVE = Truth(alpha_sync=0.5, beta_sync=0.1)
# Two micro-batch sizes on one replica and two multi-replica sizes: every parameter identified.
IDENTIFYING = [(1, 32, 1), (1, 64, 1), (2, 64, 1), (4, 64, 1)]


def feed(model: ThroughputModel, truth: Truth, configs: list[tuple[int, int, int]],
         steps: int = 10, noise: float = 0.0, seed: int = 0) -> None:
    rng = random.Random(seed)
    for world, micro, accumulation in configs:
        for _ in range(WARMUP_STEPS + steps):
            seconds = truth.seconds(world, micro, accumulation) * (1.0 + noise * rng.gauss(0, 1))
            model.observe(world, micro, accumulation, seconds)


# --- the throughput model ------------------------------------------------------------------------


def test_fit_recovers_known_alphas_and_betas_from_noisy_step_times() -> None:
    truth = Truth(alpha_grad=0.02, beta_grad=0.001, alpha_sync=0.05, beta_sync=0.01)
    model = ThroughputModel(sync_prior_seconds=0.1)
    configs = [(1, 32, 1), (1, 64, 1), (1, 64, 2), (2, 64, 1), (4, 64, 1), (8, 32, 1)]
    feed(model, truth, configs, steps=PER_CONFIGURATION, noise=0.03)
    fit = model.fit()
    assert fit is not None and fit.priors == frozenset()
    assert fit.alpha_grad == pytest.approx(truth.alpha_grad, rel=0.15)
    assert fit.beta_grad == pytest.approx(truth.beta_grad, rel=0.15)
    assert fit.alpha_sync == pytest.approx(truth.alpha_sync, rel=0.15)
    assert fit.beta_sync == pytest.approx(truth.beta_sync, rel=0.15)
    # A configuration never run is predicted from the fitted law.
    assert model.predict(16, 64, 2) == pytest.approx(truth.seconds(16, 64, 2), rel=0.05)


def test_the_first_steps_of_a_run_and_single_slow_steps_do_not_move_the_fit() -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)
    for _ in range(WARMUP_STEPS):
        assert not model.observe(1, 64, 1, 5.0)  # warm-up after the start: dropped
    for step in range(10):
        model.observe(1, 64, 1, 30.0 if step == 4 else 0.5)  # one checkpoint-sized outlier
    assert model.predict(1, 64, 1) == pytest.approx(0.5)
    restarted = ThroughputModel(sync_prior_seconds=0.1)
    restarted.load_state_dict(model.state_dict())
    for _ in range(WARMUP_STEPS):  # a restart's first steps are dropped again
        assert not restarted.observe(1, 64, 1, 5.0)
    assert restarted.observe(1, 64, 1, 0.5)


def test_one_micro_batch_on_one_replica_falls_back_to_compute_proportional_and_the_sync_prior(
) -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)
    feed(model, CHEAP, [(1, 64, 1)])
    fit = model.fit()
    assert fit is not None
    assert fit.priors == {"alpha_grad", "alpha_sync", "beta_sync"}
    measured = CHEAP.seconds(1, 64, 1)
    assert fit.alpha_grad == 0.0 and fit.beta_grad == pytest.approx(measured / 64)
    assert model.predict(1, 128, 1) == pytest.approx(2 * measured)  # compute ∝ m
    assert model.predict(3, 64, 1) == pytest.approx(measured + 2 * 0.1)  # syncPrior per replica


def test_one_multi_replica_size_gives_sync_proportional_to_the_extra_replicas() -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)
    feed(model, EXPENSIVE, [(1, 32, 1), (1, 64, 1), (2, 64, 1)])
    fit = model.fit()
    assert fit is not None and fit.priors == {"alpha_sync"}
    measured_sync = EXPENSIVE.seconds(2, 64, 1) - EXPENSIVE.seconds(1, 64, 1)
    assert fit.beta_sync == pytest.approx(measured_sync)
    assert fit.alpha_grad == pytest.approx(0.01) and fit.beta_grad == pytest.approx(0.001)
    assert model.predict(4, 64, 1) == pytest.approx(EXPENSIVE.seconds(1, 64, 1) + 3 * measured_sync)


def test_the_sync_prior_claims_at_most_half_of_a_measured_multi_replica_step() -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)  # a job that never ran on one replica
    for _ in range(WARMUP_STEPS + 5):
        model.observe(2, 64, 1, 0.1)
    fit = model.fit()
    assert fit is not None and fit.beta_sync == pytest.approx(0.05)
    assert fit.beta_grad == pytest.approx(0.05 / 64)
    assert model.predict(2, 64, 1) == pytest.approx(0.1)


def test_replicas_count_pods_not_processes() -> None:
    model = ThroughputModel(sync_prior_seconds=0.1, procs_per_replica=4)
    for _ in range(WARMUP_STEPS + 5):  # one pod of four processes: no inter-pod sync
        model.observe(4, 64, 1, 0.074)
    assert model.replicas(4) == 1 and model.replicas(8) == 2
    assert model.predict(4, 64, 1) == pytest.approx(0.074)
    assert model.predict(8, 64, 1) == pytest.approx(0.074 + 0.1)  # one extra pod


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan, math.inf])
def test_unusable_step_times_are_not_observed(seconds: float) -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)
    for _ in range(WARMUP_STEPS + 5):
        assert not model.observe(1, 64, 1, seconds)
    assert not model.observe(1, 0, 1, 0.5)  # a caller that reports no micro-batch
    assert not model.ready and model.fit() is None
    with pytest.raises(ValueError, match="no step time observed"):
        model.predict(1, 64, 1)


def test_the_observation_window_is_bounded() -> None:
    model = ThroughputModel(sync_prior_seconds=0.1)
    configs = [(1, m, 1) for m in range(1, CONFIGURATIONS + 5)]
    feed(model, CHEAP, configs, steps=3 * PER_CONFIGURATION)
    observations = model.state_dict()["observations"]
    assert len(observations) == CONFIGURATIONS
    assert observations[0][1] == 5  # the least recently run went first
    assert all(len(row[3]) == PER_CONFIGURATION for row in observations)


def test_throughput_state_round_trips_and_checks_its_version() -> None:
    a = ThroughputModel(sync_prior_seconds=0.1)
    feed(a, CHEAP, IDENTIFYING, noise=0.02)
    b = ThroughputModel(sync_prior_seconds=0.1)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert b.predict(8, 64, 3) == a.predict(8, 64, 3)
    with pytest.raises(ValueError, match="version"):
        b.load_state_dict({**a.state_dict(), "version": 99})


# --- the policy ----------------------------------------------------------------------------------


def make(initial: int = 64, maximum: int = 1024, replicas_max: int = 16,
         wait_seconds: float = 1e9, **settings: object) -> GoodputPolicy:
    return GoodputPolicy(
        initial, maximum, GoodputSettings.model_validate({"cooldownSteps": 50, **settings}),
        per_gpu_max=64, replicas=Replicas(min=1, max=replicas_max),
        unschedulable_after_seconds=wait_seconds,
    )


def warmed(truth: Truth, initial: int = 64, maximum: int = 1024, replicas_max: int = 16,
           wait_seconds: float = 1e9, **settings: object) -> GoodputPolicy:
    """A policy whose throughput model has seen every parameter of `truth`."""
    policy = make(initial, maximum, replicas_max, wait_seconds, **settings)
    feed(policy.model, truth, IDENTIFYING)
    return policy


def at(step: int, batch: int, noise: float | None, world: int = 1, truth: Truth = CHEAP,
       loss: float = 1.0) -> Signals:
    """The signals of a step run as the trainers run it: B laid out over `world` processes, one
    worker's step split in two micro-batches at least (for the noise scale, as `Job.layout`)."""
    plan = layout(batch, world, min(64, -(-batch // 2)) if world == 1 else 64)
    return Signals(
        step=step, epoch=0, epoch_end=False, global_batch=batch, loss=loss,
        measured={} if noise is None else {NOISE_SCALE_SIMPLE: noise},
        world_size=world, step_seconds=truth.seconds(world, plan.max_micro, plan.accumulation),
        accumulation=plan.accumulation, micro_batch=plan.max_micro,
    )


def test_a_small_noise_scale_keeps_b_at_b0() -> None:
    # φ ≪ B0: doubling B halves the worth of a sample, and even near-linear scaling cannot pay.
    d = warmed(CHEAP, initial=128).decide(at(100, 128, noise=2.0, world=2))
    assert (d.code, d.global_batch) == (HOLD, 128)
    assert d.reason == "φ 2: B 128 on 2 replicas has the best goodput"


def test_a_large_noise_scale_and_cheap_sync_grow_b_one_factor_per_decision() -> None:
    policy = warmed(CHEAP)
    batch, seen = 64, []
    for step in range(100, 400, 50):
        d = policy.decide(at(step, batch, noise=1e6, world=policy.asked_replicas(batch)))
        seen.append((d.code, d.global_batch))
        batch = d.global_batch
    assert seen == [(GOODPUT, 128), (GOODPUT, 256), (GOODPUT, 512), (GOODPUT, 1024),
                    (CAPPED, 1024), (CAPPED, 1024)]
    first = warmed(CHEAP).decide(at(100, 64, noise=1e6))
    assert first.reason.startswith("φ 1e+06: best B 1024 on 16 replicas, goodput +")
    assert first.reason.endswith("≥ 5% → 64→128 on 2 replicas")
    assert policy.decide(at(400, 1024, 1e6, world=16)).reason.endswith("already at max 1024")


def test_expensive_sync_prefers_larger_micro_batches_on_one_replica_to_more_replicas() -> None:
    cheap = warmed(CHEAP, initial=32).decide(at(100, 32, noise=1e6))
    expensive = warmed(EXPENSIVE, initial=32).decide(at(100, 32, noise=1e6, truth=EXPENSIVE))
    assert "best B 1024 on 16 replicas" in cheap.reason
    assert "best B 64 on 1 replica," in expensive.reason  # m 32 → 64 pays, replicas do not
    assert cheap.global_batch == expensive.global_batch == 64


def test_expensive_sync_prefers_accumulation_on_the_replicas_it_may_have() -> None:
    # replicas.max 2: a larger B runs as accumulation, which amortises the one all-reduce a step.
    expensive = warmed(EXPENSIVE, replicas_max=2).decide(at(100, 128, 1e6, 2, EXPENSIVE))
    assert (expensive.code, expensive.global_batch) == (GOODPUT, 256)
    assert "best B 1024 on 2 replicas" in expensive.reason
    cheap = warmed(CHEAP, replicas_max=2).decide(at(100, 128, 1e6, 2))
    assert (cheap.code, cheap.global_batch) == (HOLD, 128)


def test_replicas_max_caps_k_in_every_candidate() -> None:
    policy = warmed(CHEAP, replicas_max=4)
    candidate = policy.candidate(1024, noise=1e6)
    assert candidate is not None and (candidate.replicas, candidate.accumulation) == (4, 4)
    d = policy.decide(at(100, 256, 1e6, world=4))
    assert (d.code, d.global_batch) == (HOLD, 256), d.reason
    assert warmed(CHEAP).decide(at(100, 256, 1e6, world=4)).global_batch == 512  # uncapped


def test_minimum_gain_and_cooldown() -> None:
    # One replica, each step in two micro-batches: 32 → 64 gains
    # (64/T(32, a 2))/(32/T(16, a 2))·(φ + 32)/(φ + 64) − 1 = 20.1% at φ 1000.
    gain = (64 / CHEAP.seconds(1, 32, 2)) / (32 / CHEAP.seconds(1, 16, 2)) * 1032 / 1064 - 1
    assert gain == pytest.approx(0.201, abs=1e-3)
    one = {"initial": 32, "maximum": 64, "replicas_max": 1}
    held = warmed(CHEAP, **one, minGain=0.25).decide(at(100, 32, 1000.0))
    assert held.code == HOLD and held.reason.endswith("goodput +20% < 25%: hold")
    policy = warmed(CHEAP, **one, minGain=0.05)
    assert policy.decide(at(100, 32, 1000.0)).global_batch == 64
    assert policy.decide(at(149, 64, 1e6)).reason == "cooldown"
    later = policy.decide(at(150, 64, 1e6))  # decides again: 128 would gain, but B_max is 64
    assert (later.code, later.global_batch) == (CAPPED, 64)
    first = make().decide(at(49, 64, 1e6))
    assert first.reason == "cooldown"  # the first decision waits a cooldown too


def test_absent_or_unusable_noise_scale_and_unmeasured_steps_hold() -> None:
    policy = warmed(CHEAP)
    assert policy.decide(at(100, 64, None)).reason == "noise scale not settled yet"
    assert policy.decide(at(100, 64, math.nan)).code == NOT_FINITE
    assert policy.decide(at(100, 64, -3.0)).code == NOT_FINITE
    assert policy.decide(at(100, 64, 1e6, loss=math.inf)).code == NOT_FINITE
    unmeasured = make().decide(at(100, 64, 1e6))
    assert (unmeasured.code, unmeasured.reason) == (HOLD, "no steady step time measured yet")


def test_decide_feeds_the_throughput_model_from_every_steps_signals() -> None:
    policy = make()
    for step in range(1, WARMUP_STEPS + 3):
        policy.decide(at(step, 64, None))
    assert not policy.model.ready
    last = at(WARMUP_STEPS + 3, 64, None)
    policy.decide(last)
    assert (last.micro_batch, last.accumulation) == (32, 2)
    assert policy.model.predict(1, 32, 2) == pytest.approx(CHEAP.seconds(1, 32, 2))


def test_replicas_that_never_come_cap_k_at_the_largest_world_seen_until_it_grows() -> None:
    policy = warmed(CHEAP, wait_seconds=10.0, cooldownSteps=0)
    # B 256 asks for 4 replicas; the world goes 1, 2, 1, ... and never reaches 4.
    waited, step = 0.0, 0
    while True:
        step += 1
        signals = at(step, 256, None, world=2 if step == 2 else 1)
        if waited + signals.step_seconds >= 10.0:
            break
        policy.decide(signals)
        waited += signals.step_seconds
    assert policy.cap is None  # not waited 10 s of training yet
    policy.decide(signals)
    assert policy.cap == 2
    steps_to_wait = step
    capped = policy.decide(at(steps_to_wait + 1, 256, 1e6, world=2))
    assert (capped.code, capped.global_batch) == (HOLD, 256)  # more B would only accumulate
    assert capped.reason.endswith("(replicas capped at 2: 4 asked for, not scheduled)")
    policy.decide(at(steps_to_wait + 2, 256, None, world=3))  # the world grows by itself
    assert policy.cap is None
    grown = policy.decide(at(steps_to_wait + 3, 256, 1e6, world=4))
    assert (grown.code, grown.global_batch) == (GOODPUT, 512)


def test_a_world_that_reaches_the_ask_restarts_the_wait() -> None:
    policy = warmed(CHEAP, wait_seconds=10.0)
    for step in range(1, 200):
        policy.decide(at(step, 256, None, world=4 if step % 50 == 0 else 2))
    assert policy.cap is None  # never 10 s short in a row (each stretch is < 50 × 0.15 s)


class SimulatedJob:
    """Trainers that follow every decision and an operator that gives every replica asked for."""

    def __init__(self, truth: Truth, seed: int) -> None:
        self.truth, self.rng, self.batch, self.step = truth, random.Random(seed), 64, 0

    def run(self, policy: GoodputPolicy, steps: int, noise: float = 0.0) -> list[Decision]:
        out = []
        for _ in range(steps):
            self.step += 1
            world = policy.asked_replicas(self.batch)
            signals = at(self.step, self.batch, 3000.0 if self.step > 20 else None, world,
                         self.truth)
            jitter = 1.0 + noise * self.rng.gauss(0, 1)
            signals = Signals(**{**signals.__dict__, "step_seconds": signals.step_seconds * jitter})
            decision = policy.decide(signals)
            out.append(decision)
            self.batch = decision.global_batch
        return out


def test_the_same_signals_give_the_same_decisions() -> None:
    a = SimulatedJob(CHEAP, seed=1).run(make(syncPriorSeconds=0.001), 400, noise=0.05)
    b = SimulatedJob(CHEAP, seed=1).run(make(syncPriorSeconds=0.001), 400, noise=0.05)
    assert a == b
    batches = [64] + [d.global_batch for d in a]
    assert all(n in (b, 2 * b) for b, n in itertools.pairwise(batches))
    assert batches[-1] > 64  # φ 3000 and cheap sync: it grew


def test_the_default_sync_prior_keeps_short_steps_on_one_replica_until_sync_is_measured() -> None:
    # 74 ms steps, never run on two replicas: the 0.1 s prior says a second one would not pay.
    held = SimulatedJob(CHEAP, seed=3).run(make(), 300)
    assert {d.global_batch for d in held} == {64}
    assert held[-1].reason == "φ 3000: B 64 on 1 replica has the best goodput"
    # A cheaper guess lets it try; the measured sync then replaces the guess.
    policy = make(syncPriorSeconds=0.01)
    grown = SimulatedJob(CHEAP, seed=3).run(policy, 300)
    assert grown[-1].global_batch > 64
    fit = policy.model.fit()
    assert fit is not None and "beta_sync" not in fit.priors


def test_policy_state_round_trips_and_continues_identically() -> None:
    job_a, job_b = SimulatedJob(CHEAP, seed=2), SimulatedJob(CHEAP, seed=2)
    a, b = make(syncPriorSeconds=0.01), make(syncPriorSeconds=0.01)
    job_a.run(a, 120)
    job_b.run(b, 120)
    a.cap, a.cap_asked = 3, 8  # restart state besides the model
    restored = make(syncPriorSeconds=0.01)
    restored.load_state_dict(a.state_dict())
    assert restored.state_dict() == a.state_dict()
    continued = job_a.run(a, 200)
    assert continued == job_b.run(restored, 200)
    assert any(d.code == GOODPUT for d in continued)
    with pytest.raises(ValueError, match=r"batch\.policy cannot change"):
        restored.load_state_dict({**a.state_dict(), "name": "gns"})


def test_build_policy_passes_replicas_processes_and_the_operators_wait() -> None:
    batch = Batch(policy="goodput", per_gpu_max=32)
    built = build_policy(batch, replicas=Replicas(min=2, max=6), procs_per_replica=2,
                         scaling=Scaling(schedule_timeout_seconds=120, cooldown_seconds=30))
    assert isinstance(built, GoodputPolicy)
    assert built.unschedulable_after_seconds == 150
    assert built.asked_replicas(128) == 2 and built.asked_replicas(10_000) == 6
    assert built.measurements(0, 0, False) == {NOISE_SCALE_SIMPLE}
    explicit = Batch(policy="goodput", goodput=GoodputSettings(unschedulable_after_seconds=42))
    waits = build_policy(explicit)
    assert isinstance(waits, GoodputPolicy) and waits.unschedulable_after_seconds == 42
    assert GOODPUT in REASON_CODES
