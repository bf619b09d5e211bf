"""Counting lost steps: done before a restart, missing from the checkpoint resumed from."""

from __future__ import annotations

import pytest
from crescendo_trainer.high_water import Mark
from crescendo_trainer.lost_steps import LostSteps, count_lost_steps


def test_steps_beyond_the_checkpoint_are_lost_and_added_to_the_carried_total() -> None:
    assert count_lost_steps(Mark(157, 0), resumed_step=150, checkpoint_total=0) == LostSteps(7, 7)
    assert count_lost_steps(Mark(230, 7), resumed_step=200, checkpoint_total=7) == LostSteps(30, 37)


@pytest.mark.parametrize(
    ("mark", "resumed_step"),
    [
        (None, 150),  # fresh directory, or a record that could not be trusted
        (Mark(150, 0), 150),  # a clean stop (SIGTERM, budget) checkpointed its last step
        (Mark(149, 0), 150),  # survivors checkpointed a step rank 0 never recorded
    ],
)
def test_nothing_is_lost_when_the_checkpoint_holds_every_recorded_step(
    mark: Mark | None, resumed_step: int
) -> None:
    assert count_lost_steps(mark, resumed_step, checkpoint_total=4) == LostSteps(0, 4)


def test_with_no_checkpoint_every_recorded_step_is_lost() -> None:
    assert count_lost_steps(Mark(40, 0), resumed_step=0, checkpoint_total=0) == LostSteps(40, 40)


def test_a_second_failure_before_the_next_checkpoint_keeps_the_first_loss() -> None:
    first = count_lost_steps(Mark(170, 0), resumed_step=100, checkpoint_total=0)
    assert first == LostSteps(70, 70)
    # The restarted run redid steps up to 130 (mark rewritten as it went), then died too; the
    # checkpoint it resumes from again still says 0.
    second = count_lost_steps(Mark(130, first.total), resumed_step=100, checkpoint_total=0)
    assert second == LostSteps(30, 100)


def test_counting_again_from_the_rewritten_mark_adds_nothing() -> None:
    lost = count_lost_steps(Mark(170, 5), resumed_step=100, checkpoint_total=5)
    # Rank 0 rewrites the mark as (resumed step, total) at once: a crash before the first new
    # step, or another rank reading after the rewrite, gets the same total.
    again = count_lost_steps(Mark(100, lost.total), resumed_step=100, checkpoint_total=5)
    assert again == LostSteps(0, lost.total) == LostSteps(0, 75)


def test_the_total_never_goes_below_the_checkpoint_total() -> None:
    assert count_lost_steps(Mark(300, 2), resumed_step=300, checkpoint_total=9).total == 9
