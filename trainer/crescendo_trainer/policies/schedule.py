"""`schedule`: the global batch as a function of the tokens or samples consumed so far.

Two schedules, as language-model pre-training runs them (`batch.schedule`, parsed by
`crescendo_spec.schedule`, the parser the spec validator uses too):

- Megatron-LM's step schedule (`steps`, e.g. "0:16 2.4B:320"): B is the batch of the last
  threshold ≤ the consumed units c.
- GPT-3's linear ramp (Brown et al. 2020, arXiv 2005.14165, App. B), with Megatron-LM's
  `--rampup-batch-size <start> <increment> <samples>` arithmetic: over the first R = `rampUnits`
  units B grows from B0 to B_max in whole increments Δ (`increment`, default B0):
      B(c) = B0 + ⌊(B_max − B0)·c / (R·Δ)⌋·Δ   for c < R,   B_max for c ≥ R.
  The spec requires Δ | (B_max − B0), so B reaches B_max exactly at c = R; the k-th increment
  takes effect at c_k = ⌈k·R·Δ / (B_max − B0)⌉, the threshold the reason text names.

c = consumed samples × units per sample (language.seqLen tokens, or 1 when counting samples). B is
a pure function of c, so the policy keeps no state beyond the base's: a restart, handed the same
consumed samples, decides the same B.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from crescendo_spec.model import ScheduleSettings
from crescendo_spec.schedule import counted_unit, format_units

from crescendo_trainer.policies.base import RAMP, BatchSizePolicy, Decision, Signals

StepSchedule = tuple[tuple[int, int], ...]  # (threshold, batch), thresholds from 0, increasing


@dataclass(frozen=True)
class LinearRamp:
    """B0 → B_max over `units` consumed units, in multiples of `increment` (Δ | B_max − B0)."""

    initial: int
    maximum: int
    units: int
    increment: int


def schedule_of(
    initial: int, maximum: int, settings: ScheduleSettings
) -> StepSchedule | LinearRamp:
    """The schedule `settings` describes, read with the spec's parser."""
    steps = settings.step_schedule
    if steps is not None:
        return steps
    units = settings.ramp_unit_count
    if units is None:
        raise ValueError("batch.schedule: set one of steps or rampUnits")
    return LinearRamp(initial, maximum, units, settings.ramp_increment(initial))


def scheduled_step(consumed_units: int, schedule: StepSchedule | LinearRamp) -> tuple[int, int]:
    """(threshold, batch) of the step in force once `consumed_units` are consumed."""
    if consumed_units < 0:
        raise ValueError(f"consumed units must be >= 0, got {consumed_units}")
    if isinstance(schedule, LinearRamp):
        span = schedule.maximum - schedule.initial
        if span == 0:
            return 0, schedule.initial
        if consumed_units >= schedule.units:
            return schedule.units, schedule.maximum
        # Integer arithmetic: thresholds in the trillions must not round.
        increments = span * consumed_units // (schedule.units * schedule.increment)
        threshold = -(-increments * schedule.units * schedule.increment // span)  # ceil
        return threshold, schedule.initial + increments * schedule.increment
    index = bisect_right([threshold for threshold, _ in schedule], consumed_units) - 1
    return schedule[index]


def scheduled_batch(consumed_units: int, schedule: StepSchedule | LinearRamp) -> int:
    """The global batch once `consumed_units` tokens or samples are consumed (the decision)."""
    return scheduled_step(consumed_units, schedule)[1]


class SchedulePolicy(BatchSizePolicy):
    """B follows a step schedule or a linear ramp over consumed units; see the module docstring."""

    name = "schedule"

    def __init__(
        self,
        initial: int,
        maximum: int,
        settings: ScheduleSettings,
        *,
        language_model: bool = False,
        tokens_per_sample: int = 1,
    ) -> None:
        super().__init__(initial, maximum)
        if tokens_per_sample < 1:
            raise ValueError(f"tokens_per_sample: must be >= 1, got {tokens_per_sample}")
        self.unit = counted_unit(settings.unit, language_model=language_model)
        self.units_per_sample = tokens_per_sample if self.unit == "tokens" else 1
        self.schedule = schedule_of(initial, maximum, settings)

    def consumed_units(self, signals: Signals) -> int:
        return signals.samples * self.units_per_sample

    def decide(self, signals: Signals) -> Decision:
        # A schedule does not read the loss, but no policy moves B on a NaN/inf loss; the next
        # finite step catches up, since B depends on the consumed units alone.
        refused = self.refuse_not_finite(signals)
        if refused is not None:
            return refused
        consumed = self.consumed_units(signals)
        threshold, target = scheduled_step(consumed, self.schedule)
        current = signals.global_batch
        seen = f"{format_units(consumed, 2)} {self.unit} consumed"
        if target == current:
            return self.hold(signals, f"{seen}: {current} as scheduled")
        return Decision(target, RAMP, f"{seen} ≥ {format_units(threshold)} → {current}→{target}")
