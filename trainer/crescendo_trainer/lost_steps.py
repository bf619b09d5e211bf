"""Lost steps: optimizer steps completed before a restart that the checkpoint resumed from does
not hold, so they are done again. The decision is one pure function; the loop wires it.

    lost  = max(0, high_water − resumed_step)               (0 when the mark is unknown)
    total = max(checkpoint_total, mark_total) + lost

high_water is the last step rank 0 completed before the restart (high_water.py); resumed_step
is the checkpoint's step (0 with no checkpoint, so steps done before the first checkpoint count
as lost too). A clean stop (SIGTERM, peer lost, budget reached) checkpoints its last completed
step, so high_water == resumed_step and nothing is lost; a fresh directory has no mark at all.

The total is the exported counter `crescendo_trainer_lost_steps_total`; it must survive restarts
and never go backwards. The checkpoint carries it (Progress.lost_steps), but a second failure
before the next checkpoint would resume from the same checkpoint and forget the first loss, so
the mark carries the total its writer knew as well: both are lower bounds of the truth and the
larger one is the newer. Right after counting, rank 0 rewrites the mark as (resumed_step, total):
counting again from that mark adds nothing, so a crash before the first new step, or a rank
that reads the mark after rank 0 rewrote it, arrives at the same total.
"""

from __future__ import annotations

from dataclasses import dataclass

from crescendo_trainer.high_water import Mark


@dataclass(frozen=True)
class LostSteps:
    this_restart: int  # steps redone because of this restart
    total: int  # all steps redone in this job so far, this restart's included


def count_lost_steps(mark: Mark | None, resumed_step: int, checkpoint_total: int) -> LostSteps:
    """What this restart lost and the job's running total (see the module docstring)."""
    if mark is None:  # no mark, or one that cannot be trusted: claim no loss
        return LostSteps(0, checkpoint_total)
    lost = max(0, mark.step - resumed_step)
    return LostSteps(lost, max(checkpoint_total, mark.lost_total) + lost)
