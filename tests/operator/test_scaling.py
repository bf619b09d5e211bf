"""The scaling decision table, sample trust, cooldown, manual pin and index planning."""

from __future__ import annotations

import math
from typing import Any

import pytest
from crescendo_operator.scaling import (
    Rejection,
    Replica,
    Sample,
    TrainerReading,
    check_decision,
    decide,
    overdue_pending,
    plan,
    replicas_for_batch,
)
from crescendo_spec import JobSpec, parse_spec

NOW = 1_000_000.0


def spec(**overrides: Any) -> JobSpec:
    base: dict[str, Any] = {
        "gpusPerReplica": 2,
        "replicas": {"min": 1, "max": 8},
        "batch": {"initial": 256, "max": 8192, "perGpuMax": 256},
        "epochs": 1,
        "scaling": {"cooldownSeconds": 60, "maxStalenessSeconds": 30},
    }
    base.update(overrides)
    return parse_spec(base)


def reading(batch: float | None, age: float = 1.0) -> TrainerReading:
    return TrainerReading(desired_batch=None if batch is None else Sample(batch, NOW - age))


@pytest.mark.parametrize(
    ("batch", "expected"),
    [(1, 1), (512, 1), (513, 2), (1024, 2), (2048, 4), (4096, 8), (8192, 8)],
)
def test_replicas_are_ceil_of_batch_over_gpus_times_per_gpu_max_clamped(
    batch: int, expected: int
) -> None:
    assert replicas_for_batch(batch, spec()) == expected


def test_cpu_jobs_count_trainer_processes_instead_of_gpus() -> None:
    cpu = spec(gpusPerReplica=0, nprocPerReplica=2, batch={"initial": 32, "max": 512,
                                                           "perGpuMax": 32})
    assert replicas_for_batch(64, cpu) == 1
    assert replicas_for_batch(65, cpu) == 2


def test_min_replicas_bound_the_count_from_below() -> None:
    assert replicas_for_batch(1, spec(replicas={"min": 3, "max": 8})) == 3


@pytest.mark.parametrize(
    ("value", "age", "reason"),
    [
        (None, 1, "NoSample"),
        (1024, 31, "StaleSample"),
        (math.nan, 1, "InvalidValue"),
        (math.inf, 1, "InvalidValue"),
        (1000.5, 1, "InvalidValue"),
        (-256, 1, "OutOfRange"),
        (0, 1, "OutOfRange"),
        (8193, 1, "OutOfRange"),
    ],
)
def test_untrustworthy_samples_are_rejected_with_a_reason(
    value: float | None, age: float, reason: str
) -> None:
    sample = None if value is None else Sample(value, NOW - age)
    result = check_decision(sample, spec(), NOW)
    assert isinstance(result, Rejection) and result.reason == reason


def test_a_fresh_integral_in_range_sample_is_accepted() -> None:
    assert check_decision(Sample(2048.0, NOW - 29), spec(), NOW) == 2048


def test_new_job_starts_at_initial_replicas_without_a_decision() -> None:
    decision = decide(spec(replicas={"min": 1, "max": 8, "initial": 3}), reading(None), 0,
                      None, None, NOW)
    assert (decision.target, decision.reason) == (3, "Initial")


def test_decision_scales_up_when_cooldown_has_passed() -> None:
    decision = decide(spec(), reading(2048), 2, 1024, NOW - 61, NOW)
    assert (decision.target, decision.reason, decision.desired_batch) == (4, "Decision", 2048)


def test_cooldown_holds_the_size_and_says_how_long() -> None:
    decision = decide(spec(), reading(2048), 2, 1024, NOW - 10, NOW)
    assert (decision.target, decision.reason) == (2, "Cooldown")
    assert "50s" in decision.message


def test_a_rejected_sample_keeps_the_last_accepted_size() -> None:
    decision = decide(spec(), reading(math.nan), 4, 2048, None, NOW)
    assert decision.target == 4 and decision.desired_batch == 2048
    assert decision.rejection is not None and decision.rejection.reason == "InvalidValue"


def test_without_any_decision_the_current_size_is_kept() -> None:
    assert decide(spec(), reading(None), 3, None, None, NOW).target == 3


def test_manual_pin_wins_over_decisions_and_cooldown_and_is_clamped() -> None:
    pinned = spec(replicas={"min": 1, "max": 8, "manual": 5})
    decision = decide(pinned, reading(256), 2, 256, NOW - 1, NOW)
    assert (decision.target, decision.reason) == (5, "ManualPin")
    over = spec(replicas={"min": 1, "max": 4, "manual": 9})
    decision = decide(over, reading(256), 2, 256, None, NOW)
    assert decision.target == 4 and "clamped" in decision.message


def test_plan_adds_lowest_free_indices_and_removes_highest_never_worker_0() -> None:
    assert plan([0, 1], 4) == ([2, 3], [])
    assert plan([0, 1, 2, 3], 2) == ([], [3, 2])
    assert plan([0, 1, 2, 3], 0) == ([], [3, 2, 1])
    assert plan([0, 2], 3) == ([1], [])  # a gap is filled
    assert plan([0, 2], 2) == ([], [])  # no churn for a gap at the same size
    assert plan([1, 2], 2) == ([0], [2])  # worker-0 hosts the rendezvous: recreated first


def _pending(index: int, created: float, scheduled: bool = False) -> Replica:
    return Replica(index=index, phase="Pending", scheduled=scheduled, created=created)


def test_overdue_pending_gives_back_unscheduled_pods_except_worker_0() -> None:
    replicas = [
        _pending(0, NOW - 999),
        Replica(index=1, phase="Running", created=NOW - 999),
        _pending(2, NOW - 301),
        _pending(3, NOW - 10),
        _pending(4, NOW - 999, scheduled=True),  # placed, pulling its image
    ]
    assert overdue_pending(replicas, NOW, 300) == [2]
