"""A user's own script (examples/user_script.py) under real torchrun agents keeps the built-in
trainer's guarantees: joins and leaves at step boundaries, a killed agent costs no completed step,
the batch follows the policy, and its own scheduler and extras come back from the checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crescendo_spec import JobSpec

from tests.trainer.conftest import (
    LocalJob,
    join_then_leave_costs_no_step,
    killed_agent_costs_no_step,
    small_job,
)

pytestmark = pytest.mark.slow

SCRIPT = "examples/user_script.py"


def script_job(**overrides: Any) -> JobSpec:
    assert Path(SCRIPT).is_file(), "run the tests from the repository root"
    batch = {"initial": 32, "perGpuMax": 32, "max": 128, **overrides.pop("batch", {})}
    return small_job(script=SCRIPT, batch=batch, **overrides)


def test_user_script_joins_and_leaves_with_no_lost_step(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    job = local_job(script_job(maxSteps=12_000))  # ~1 ms a step: long enough to join and leave
    records = join_then_leave_costs_no_step(job, steps=12_000)
    assert records[-1]["accuracy"] > 0.8, "the script's own evaluation reached the trace"
    # The script's StepLR (0.8 every 50 steps) is a tracked component: after both restarts its
    # LR is where an unbroken run's would be (B stays 32 = the reference batch, factor 1).
    for r in job.steps():
        if r.get("loss") is not None:
            assert r["lr"] == pytest.approx(0.1 * 0.8 ** ((r["step"] - 1) // 50)), r


def test_killed_agent_costs_the_user_script_no_completed_step(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    killed_agent_costs_no_step(local_job(script_job(maxSteps=8_000)))


def test_user_script_batch_follows_the_policy_through_accumulation(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    spec = script_job(maxSteps=None, epochs=4, batch={
        "initial": 32, "max": 128, "perGpuMax": 16, "policy": "adabatch",
        "adabatch": {"resizeEveryEpochs": 1}})
    job = local_job(spec)
    job.add(0)
    job.add(1)
    assert job.agents[0].wait(timeout=180) == 0, job.logs()
    assert job.agents[1].wait(timeout=30) == 0, job.logs()

    records = job.trace()
    decisions = [(r["old"], r["new"]) for r in records if r["kind"] == "decision"]
    assert decisions == [(32, 64), (64, 128)]
    steps = [r for r in records if r["kind"] == "step" and r.get("loss") is not None]
    # B = world × micro × accumulation with micro ≤ perGpuMax (16).
    assert {r["world"] for r in steps} == {2}
    assert {(r["batch"], r["accumulation"]) for r in steps} == {(32, 1), (64, 2), (128, 4)}
    # The script's StepLR takes 0.8 of its LR every 50 steps, under the job's batch scaling
    # (linear: lr ∝ B / 32): the LR the trace shows is 0.1 · B/32 · 0.8^⌊(step − 1)/50⌋.
    assert steps[-1]["step"] > 50
    for r in steps:
        expected = 0.1 * r["batch"] / 32 * 0.8 ** ((r["step"] - 1) // 50)
        assert r["lr"] == pytest.approx(expected), r
