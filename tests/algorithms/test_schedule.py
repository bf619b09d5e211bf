"""The `schedule` policy: the schedule grammar, the spec's rules, Megatron steps, GPT-3 ramps."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import jsonschema
import pytest
from crescendo_operator.scaling import replicas_for_batch
from crescendo_spec import SpecError, parse_spec
from crescendo_spec.crd import spec_schema
from crescendo_spec.model import Batch, JobSpec
from crescendo_spec.schedule import (
    COUNT_PATTERN,
    STEPS_PATTERN,
    format_units,
    parse_step_schedule,
    parse_units,
)
from crescendo_trainer.policies import Signals, build_policy
from crescendo_trainer.policies.base import HOLD, NOT_FINITE, RAMP, REASON_CODES
from crescendo_trainer.policies.schedule import (
    LinearRamp,
    SchedulePolicy,
    scheduled_batch,
    scheduled_step,
)

# --- the grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("0", 0),
        ("16", 16),
        ("1.5K", 1_500),
        ("3M", 3_000_000),
        ("2.4B", 2_400_000_000),
        ("0.5B", 500_000_000),
        ("1.25T", 1_250_000_000_000),
        ("123456789.123456789T", 123_456_789_123_456_789_000),  # exact: no float rounding
    ],
)
def test_parse_units_reads_suffixes_and_decimals_exactly(text: str, count: int) -> None:
    assert parse_units(text) == count
    assert re.fullmatch(COUNT_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2.4X", r"'2\.4X' is not a count: .*K, M, B or T suffix"),
        ("2.4b", r"'2\.4b' is not a count"),  # suffixes are upper case (b is not B)
        ("1e9", r"'1e9' is not a count"),
        ("-5", r"'-5' is not a count"),
        ("", r"'' is not a count"),
        ("1.5", r"'1\.5' is not a whole number of units"),
        ("2.4567K", r"'2\.4567K' is not a whole number of units"),
    ],
)
def test_parse_units_refuses_other_text_and_names_it(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_units(text)


@pytest.mark.parametrize("count", [0, 7, 999, 1_000, 1_500, 2_400_000_000, 1_234_567, 10**15])
def test_format_units_writes_counts_parse_units_reads_back(count: int) -> None:
    assert parse_units(format_units(count)) == count


def test_format_units_rounds_only_when_asked() -> None:
    assert (format_units(2_400_000_000), format_units(2_400_000_000, 2)) == ("2.4B", "2.40B")
    assert format_units(16, 2) == "16"


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("0:16 2.4B:320", ((0, 16), (2_400_000_000, 320))),
        ("0:16", ((0, 16),)),
        ("  0:8\n  1K:16   250K:32 ", ((0, 8), (1_000, 16), (250_000, 32))),  # YAML block text
    ],
)
def test_step_schedule_reads_threshold_batch_pairs(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_step_schedule(text) == steps
    assert re.fullmatch(STEPS_PATTERN, text), "the schema's pattern must admit what parses"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:16 2.4X:320", r"step 2 '2\.4X:320': threshold '2\.4X' is not a count"),
        ("5:16 1B:32", r"step 1 '5:16': the first threshold must be 0"),
        ("0:16 2B:32 1B:64", r"step 3 '1B:64': threshold 1B must be greater than .* 2B"),
        ("0:16 1B:32 1000M:64", r"step 3 '1000M:64': threshold 1B must be greater than .* 1B"),
        ("0:0", r"step 1 '0:0': batch '0' must be a whole number >= 1"),
        ("0:16 1B:x", r"step 2 '1B:x': batch 'x' must be a whole number >= 1"),
        ("0:16 1B", r"step 2 '1B': must be '<threshold>:<batch>'"),
        ("0:16,1B:32", r"step 1 '0:16,1B:32': batch '16,1B:32'"),
        ("  ", r"must hold at least one '<threshold>:<batch>' step"),
    ],
)
def test_step_schedule_errors_name_the_step_and_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_step_schedule(text)


# --- the spec's rules ----------------------------------------------------------------------------


def job(schedule: dict[str, Any], initial: int = 16, maximum: int = 320, **spec: Any) -> JobSpec:
    batch = {"initial": initial, "max": maximum, "perGpuMax": 64, "policy": "schedule",
             "schedule": schedule}
    return parse_spec({"maxSteps": 100, "batch": batch, **spec})


def test_spec_accepts_a_step_schedule_and_a_ramp() -> None:
    steps = job({"steps": "0:16 2.4B:320"}).batch.schedule
    assert steps.step_schedule == ((0, 16), (2_400_000_000, 320)) and steps.unit == "auto"
    ramp = job({"rampUnits": "4B", "increment": 8}).batch.schedule
    assert (ramp.ramp_unit_count, ramp.ramp_increment(16)) == (4_000_000_000, 8)
    assert job({"rampUnits": "4B"}).batch.schedule.ramp_increment(16) == 16  # default: initial


@pytest.mark.parametrize("schedule", [{}, {"steps": "0:16", "rampUnits": "4B"}])
def test_spec_needs_exactly_one_of_steps_and_ramp_units(schedule: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"spec\.batch: policy 'schedule' needs exactly one of "
                       r"schedule\.steps .* or schedule\.rampUnits"):
        job(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"steps": "0:16 2.4X:320"}, r"spec\.batch\.schedule\.steps: step 2 '2\.4X:320'"),
        ({"steps": "0:16 2B:32 1B:64"}, r"spec\.batch\.schedule\.steps: step 3 .* strictly"),
        ({"steps": "1K:16"}, r"spec\.batch\.schedule\.steps: step 1 .* first threshold must be 0"),
        ({"rampUnits": "4X"}, r"spec\.batch\.schedule\.rampUnits: '4X' is not a count"),
        ({"rampUnits": "0"}, r"spec\.batch\.schedule\.rampUnits: '0': .* at least 1 unit"),
        ({"rampUnits": "4B", "increment": 0}, r"spec\.batch\.schedule\.increment: .* equal to 1"),
        ({"steps": "0:16", "unit": "bytes"}, r"spec\.batch\.schedule\.unit: .*'tokens'"),
    ],
)
def test_spec_errors_name_the_batch_schedule_field(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        job(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"steps": "0:16 1B:640"},
         r"spec\.batch: schedule\.steps: batch 640 \(from 1B\) must lie in \[1, max\] = "
         r"\[1, 320\]"),
        ({"steps": "0:32 1B:320"},
         r"spec\.batch: schedule\.steps: the first batch \(32\) must equal initial \(16\)"),
        ({"rampUnits": "4B", "increment": 32},
         r"spec\.batch: schedule\.increment \(32\) must divide max - initial \(320 - 16 = 304\)"),
    ],
)
def test_spec_keeps_scheduled_batches_within_the_batch_section(
    schedule: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        job(schedule)


def test_ramp_default_increment_must_divide_the_span_too() -> None:
    with pytest.raises(SpecError, match=r"schedule\.increment \(16, its default batch\.initial\)"):
        job({"rampUnits": "4B"}, maximum=300)
    job({"rampUnits": "4B", "increment": 4}, maximum=300)  # 284 = 71 × 4


def test_crd_pattern_refuses_a_malformed_schedule_before_admission() -> None:
    def validate(schedule: dict[str, Any]) -> None:
        batch = {"policy": "schedule", "schedule": schedule}
        jsonschema.Draft4Validator(spec_schema()).validate({"maxSteps": 1, "batch": batch})

    validate({"steps": "0:16 2.4B:320"})
    validate({"rampUnits": "4B"})
    for bad in ({"steps": "0:16,2.4B:320"}, {"steps": "0:16 2.4X:320"}, {"rampUnits": "4 B"}):
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            validate(bad)


def test_crd_mirrors_the_exactly_one_and_increment_rules_in_cel() -> None:
    rules = [rule["rule"] for rule in spec_schema()["properties"]["batch"]
             ["x-kubernetes-validations"]]
    assert any("has(self.schedule.steps) != has(self.schedule.rampUnits)" in r for r in rules)
    assert any("(self.max - self.initial) %" in r for r in rules)


# --- Megatron-LM's step schedule -----------------------------------------------------------------

STEPS = parse_step_schedule("0:16 1B:64 2.4B:320")


@pytest.mark.parametrize(
    ("consumed", "batch"),
    [
        (0, 16),
        (999_999_999, 16),
        (1_000_000_000, 64),  # exactly at a threshold: the new batch
        (1_700_000_000, 64),  # between thresholds: the last one's
        (2_399_999_999, 64),
        (2_400_000_000, 320),
        (10**15, 320),  # after the last threshold it stays
    ],
)
def test_step_schedule_batch_is_that_of_the_last_threshold_reached(
    consumed: int, batch: int
) -> None:
    assert scheduled_batch(consumed, STEPS) == batch


def test_negative_consumed_units_are_refused() -> None:
    with pytest.raises(ValueError, match="consumed units must be >= 0"):
        scheduled_batch(-1, STEPS)


# --- GPT-3's linear ramp -------------------------------------------------------------------------

RAMP_4B = LinearRamp(initial=16, maximum=320, units=4_000_000_000, increment=16)


def test_ramp_is_monotone_in_whole_increments_and_reaches_max_exactly_at_ramp_units() -> None:
    ramp = RAMP_4B
    points = [ramp.units * k // 1000 for k in range(1000)] + [ramp.units - 1]
    batches = [scheduled_batch(c, ramp) for c in points]
    assert batches == sorted(batches) and batches[0] == 16
    assert all((b - ramp.initial) % ramp.increment == 0 for b in batches)
    assert max(batches) == 304 < ramp.maximum  # one increment short until the end
    assert set(batches) == set(range(16, 320, 16))  # every increment is taken
    assert scheduled_batch(ramp.units, ramp) == 320
    assert scheduled_batch(10 * ramp.units, ramp) == 320  # capped after


def test_ramp_matches_megatron_rampup_arithmetic() -> None:
    # Megatron-LM's RampupBatchsizeNumMicroBatchesCalculator: num_increments = (B − B0) / Δ,
    # samples per increment = R / num_increments, B = B0 + ⌊consumed / that⌋·Δ, B_max from R on.
    ramp = LinearRamp(initial=32, maximum=512, units=9_000, increment=32)
    per_increment = Fraction(ramp.units, (ramp.maximum - ramp.initial) // ramp.increment)
    for consumed in range(0, 10_000, 7):
        megatron = ramp.initial + math.floor(consumed / per_increment) * ramp.increment
        assert scheduled_batch(consumed, ramp) == min(megatron, ramp.maximum), consumed


@pytest.mark.parametrize("schedule", [RAMP_4B, LinearRamp(16, 320, 999_983, 8), STEPS])
def test_the_threshold_named_is_where_the_batch_in_force_begins(
    schedule: LinearRamp | tuple[tuple[int, int], ...],
) -> None:
    for consumed in range(0, 5_000_000_000, 77_777_777):
        threshold, batch = scheduled_step(consumed, schedule)
        assert threshold <= consumed and scheduled_batch(threshold, schedule) == batch
        assert threshold == 0 or scheduled_batch(threshold - 1, schedule) != batch


def test_a_ramp_from_initial_to_initial_holds() -> None:
    assert scheduled_step(10**9, LinearRamp(64, 64, 1_000, 64)) == (0, 64)


# --- the policy ----------------------------------------------------------------------------------


def at(samples: int, batch: int, loss: float = 1.0) -> Signals:
    return Signals(step=1, epoch=0, epoch_end=False, global_batch=batch, loss=loss,
                   samples=samples)


def lm_job(schedule: dict[str, Any], replicas_max: int = 8, seq_len: int = 2048) -> JobSpec:
    return job(schedule, model="gpt", dataset="python-stdlib", gpusPerReplica=1,
               replicas={"min": 1, "max": replicas_max}, language={"seqLen": seq_len})


def policy_of(spec: JobSpec) -> SchedulePolicy:
    built = build_policy(
        spec.batch, language_model=spec.is_language_model, tokens_per_sample=spec.language.seq_len
    )
    assert isinstance(built, SchedulePolicy)
    return built


def test_policy_reason_names_consumed_tokens_threshold_and_sizes() -> None:
    policy = policy_of(lm_job({"steps": "0:16 2.4B:320"}))
    crossing = 2_400_000_000 // 2048  # 1,171,875 sequences of 2,048 tokens
    decision = policy.decide(at(crossing, 16))
    assert (decision.global_batch, decision.code, decision.changed) == (320, RAMP, True)
    assert decision.reason == "2.40B tokens consumed ≥ 2.4B → 16→320"
    before = policy.decide(at(crossing - 1, 16))
    assert (before.global_batch, before.code) == (16, HOLD)
    assert RAMP in REASON_CODES


def test_policy_holds_on_a_non_finite_loss_and_catches_up_after() -> None:
    policy = policy_of(lm_job({"steps": "0:16 2.4B:320"}))
    assert policy.decide(at(2_000_000, 16, loss=math.nan)).code == NOT_FINITE
    assert policy.decide(at(2_000_001, 16)).global_batch == 320


@pytest.mark.parametrize(
    ("unit", "language_model", "batch"),
    [
        ("auto", True, 320),  # gpt: 1.2M sequences × 2,048 tokens ≥ 2.4B
        ("auto", False, 16),  # an image model counts samples: 1.2M < 2.4B
        ("samples", True, 16),
        ("tokens", True, 320),
    ],
)
def test_unit_decides_whether_thresholds_count_tokens_or_samples(
    unit: str, language_model: bool, batch: int
) -> None:
    settings = Batch.model_validate(
        {"initial": 16, "max": 320, "policy": "schedule",
         "schedule": {"steps": "0:16 2.4B:320", "unit": unit}}
    )
    policy = build_policy(settings, language_model=language_model, tokens_per_sample=2048)
    assert policy.decide(at(1_200_000, 16)).global_batch == batch


def test_a_restarted_policy_decides_the_same_batch_from_the_same_consumed_units() -> None:
    spec = lm_job({"rampUnits": "50M"}, seq_len=1024)
    before, batch, samples = policy_of(spec), 16, 0
    while samples * 1024 < 60_000_000:
        samples += batch
        batch = before.decide(at(samples, batch)).global_batch
    restarted = policy_of(spec)  # a fresh process: nothing but B and the consumed samples survive
    restarted.load_state_dict(before.state_dict())
    assert before.state_dict() == {"version": 1, "name": "schedule"}
    for consumed in (samples // 3, samples // 2, samples):
        signals = at(consumed, 16)
        fresh = policy_of(spec).decide(signals)
        assert restarted.decide(signals) == before.decide(signals) == fresh


def test_a_run_ramps_b_to_max_in_increments_and_stays() -> None:
    spec = lm_job({"rampUnits": "50M"}, seq_len=1024)
    policy, batch, samples, seen = policy_of(spec), 16, 0, [16]
    while samples * 1024 < 80_000_000:
        samples += batch
        decision = policy.decide(at(samples, batch))
        if decision.global_batch != batch:
            assert decision.code == RAMP and decision.global_batch - batch == 16
            seen.append(decision.global_batch)
        batch = decision.global_batch
    assert seen == list(range(16, 321, 16))  # 19 changes, each a possible rescale, no more


# --- replicas follow through the operator's rule -------------------------------------------------


@pytest.mark.parametrize(("replicas_max", "counts"), [(8, [1, 2, 3, 4, 5]), (4, [1, 2, 3, 4])])
def test_ramp_16_to_320_with_per_gpu_max_64_drives_replicas_up_to_replicas_max(
    replicas_max: int, counts: list[int]
) -> None:
    spec = lm_job({"rampUnits": "4B"}, replicas_max=replicas_max)
    ramp = policy_of(spec).schedule
    replicas = [replicas_for_batch(scheduled_batch(c, ramp), spec)
                for c in range(0, 4_100_000_000, 50_000_000)]
    assert replicas == sorted(replicas)
    assert list(dict.fromkeys(replicas)) == counts  # ceil(B / 64): 1 for 16..64, 5 for 272..320
