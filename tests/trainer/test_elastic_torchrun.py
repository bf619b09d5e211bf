"""Real torchrun agents on this machine (gloo): join, leave, budget, zero lost steps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from crescendo_spec import JobSpec, contract
from crescendo_spec.trace import restarts, steps_monotonic

from tests.trainer.conftest import LocalJob, small_job

pytestmark = pytest.mark.slow


def test_agent_joins_and_leaves_and_the_job_finishes_with_no_lost_step(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    job = local_job(small_job(maxSteps=1500))
    job.add(0)
    job.wait_for("20 steps at world 1", lambda: len(job.steps(world=1)) >= 20)
    metrics = job.scrape(0)
    for name in (contract.METRIC_GLOBAL_BATCH, contract.METRIC_DESIRED_BATCH,
                 contract.METRIC_WORLD_SIZE, contract.METRIC_STEP):
        assert f'{name}{{crescendo_job="t",crescendo_namespace="default"}}' in metrics

    job.add(1)
    job.wait_for("20 steps at world 2", lambda: len(job.steps(world=2)) >= 20)
    assert job.remove(1) is not None
    job.wait_for("steps at world 1 again", lambda: any(
        r["world"] == 1 and r["step"] > max(s["step"] for s in job.steps(world=2))
        for r in job.steps()))
    assert job.agents[0].wait(timeout=180) == 0, job.logs()

    records = job.trace()
    assert records[-1]["kind"] == "done" and records[-1]["step"] == 1500
    assert steps_monotonic(records)
    assert {r["batch"] for r in job.steps()} == {64}, "the global batch changed with the world"
    rescales = [r for r in restarts(records) if r.rescale]
    assert [(r.old_world, r.world) for r in rescales] == [(1, 2), (2, 1)]
    assert [r.lost_steps for r in rescales] == [0, 0]
    assert all(r.pause_seconds is not None and r.pause_seconds < 60 for r in rescales)
