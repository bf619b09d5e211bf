"""The live progress line of `crescendo local`."""

from __future__ import annotations

from crescendo_operator.local.display import progress_line

STATUS = {"phase": "Running", "readyReplicas": 2, "replicas": 2}


def test_progress_line_shows_the_step_and_its_loss() -> None:
    step = {"step": 7, "epoch": 0, "world": 2, "batch": 64, "loss": 0.123456}
    assert progress_line(STATUS, step, 1234.4) == (
        "Running: step 7 epoch 0 world 2 replicas 2/2 batch 64 loss 0.1235 1234 samples/s"
    )


def test_a_step_traced_without_a_loss_does_not_break_the_line() -> None:
    # The trainer traces a step that completed just before a peer was lost with loss null.
    step = {"step": 8, "epoch": 0, "world": 2, "batch": 64, "loss": None, "unreported": True}
    assert "loss n/a" in progress_line(STATUS, step, 0.0)


def test_before_the_first_step_the_line_says_it_waits() -> None:
    assert progress_line(STATUS, None, 0.0) == "Running: replicas 2/2, waiting for the first step"
