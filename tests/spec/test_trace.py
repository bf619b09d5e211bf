"""The trace reader: restarts, their lost steps and pauses, and step monotonicity."""

from __future__ import annotations

from typing import Any

from crescendo_spec.trace import restarts, steps_monotonic


def steps(first: int, last: int, world: int) -> list[dict[str, Any]]:
    return [{"kind": "step", "step": s, "world": world} for s in range(first, last + 1)]


def resume(step: int, old_world: int, world: int) -> dict[str, Any]:
    return {"kind": "resume", "step": step, "old_world": old_world, "world": world}


def pause(step: int, seconds: float) -> dict[str, Any]:
    return {"kind": "pause", "step": step, "seconds": seconds}


def test_steps_traced_beyond_the_checkpoint_count_as_lost() -> None:
    records = [*steps(1, 130, 1), resume(100, 1, 1), pause(101, 2.5), *steps(101, 140, 1)]
    [restart] = restarts(records)
    assert (restart.resume_step, restart.last_step, restart.lost_steps) == (100, 130, 30)
    assert restart.pause_seconds == 2.5 and not restart.rescale
    assert steps_monotonic(records)


def test_a_checkpoint_ahead_of_the_trace_loses_nothing() -> None:
    # The tracing rank died after step 152's gradient all-reduce, before tracing it; the
    # survivor applied step 152 and saved it.
    records = [*steps(1, 151, 2), resume(152, 2, 1), pause(153, 8.7), *steps(153, 160, 1)]
    [restart] = restarts(records)
    assert (restart.last_step, restart.resume_step, restart.lost_steps) == (151, 152, 0)
    assert restart.rescale and steps_monotonic(records)


def test_a_resume_before_any_step_is_not_a_restart() -> None:
    records = [resume(40, 2, 2), pause(41, 1.0), *steps(41, 50, 2)]
    assert restarts(records) == []


def test_a_restart_without_a_step_after_it_has_no_pause_yet() -> None:
    [restart] = restarts([*steps(1, 10, 2), resume(10, 2, 3)])
    assert restart.pause_seconds is None and restart.lost_steps == 0


def test_a_skipped_step_is_not_monotonic() -> None:
    assert not steps_monotonic([*steps(1, 5, 1), *steps(7, 9, 1)])
    assert not steps_monotonic([*steps(1, 5, 1), resume(3, 1, 1), *steps(5, 6, 1)])
