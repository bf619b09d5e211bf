"""Real torchrun agents on this machine (gloo): join, leave, budget, lost steps counted."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from crescendo_operator.local.agents import descendants, kill, kill_tree
from crescendo_spec import JobSpec, contract
from crescendo_spec.trace import restarts, steps_monotonic
from prometheus_client.parser import text_string_to_metric_families

from tests.trainer.conftest import (
    LocalJob,
    join_then_leave_costs_no_step,
    killed_agent_costs_no_step,
    small_job,
)

pytestmark = pytest.mark.slow


def test_agent_joins_and_leaves_and_the_job_finishes_with_no_lost_step(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    job = local_job(small_job(maxSteps=1500))
    join_then_leave_costs_no_step(job, steps=1500)
    assert {r["batch"] for r in job.steps()} == {64}, "the global batch changed with the world"


def test_a_running_trainer_exports_the_contract_series(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    job = local_job(small_job(maxSteps=200))
    job.add(0)
    job.wait_for("a step", lambda: len(job.steps()) >= 1)
    metrics = job.scrape(0)
    for name in (contract.METRIC_GLOBAL_BATCH, contract.METRIC_DESIRED_BATCH,
                 contract.METRIC_WORLD_SIZE, contract.METRIC_STEP):
        assert f'{name}{{crescendo_job="t",crescendo_namespace="default"}}' in metrics
    assert job.agents[0].wait(timeout=180) == 0, job.logs()


def test_grown_batch_is_honoured_at_world_2_through_accumulation(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    spec = small_job(
        dataset="digits", maxSteps=None, epochs=4,
        batch={"initial": 32, "max": 128, "perGpuMax": 16, "policy": "adabatch",
               "adabatch": {"resizeEveryEpochs": 1}},
    )
    job = local_job(spec)
    job.add(0)
    job.add(1)
    assert job.agents[0].wait(timeout=180) == 0, job.logs()
    assert job.agents[1].wait(timeout=30) == 0, job.logs()

    steps = job.steps()
    assert {r["world"] for r in steps} == {2}
    decisions = [(r["old"], r["new"]) for r in job.trace() if r["kind"] == "decision"]
    assert decisions == [(32, 64), (64, 128)]
    # B = world x micro x accumulation with micro <= perGpuMax (16).
    assert {(r["batch"], r["accumulation"]) for r in steps} == {(32, 1), (64, 2), (128, 4)}
    by_epoch = {r["epoch"]: r["batch"] for r in steps}
    assert by_epoch == {0: 32, 1: 64, 2: 128, 3: 128}
    assert steps_monotonic(job.trace())


def test_killed_peer_costs_no_step_rank_0_saves_the_last_completed_one(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    killed_agent_costs_no_step(local_job(small_job(maxSteps=600)))


def test_a_killed_worker_is_restarted_and_its_steps_beyond_the_checkpoint_count_as_lost(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    every = 100
    job = local_job(small_job(maxSteps=800, checkpoint={"everySteps": every},
                              replicas={"min": 1, "max": 1}, rendezvous={"maxRestarts": 1}))
    job.add(0)

    def between_checkpoints() -> bool:
        steps = job.steps()
        return bool(steps) and steps[-1]["step"] > every and 10 <= steps[-1]["step"] % every <= 80

    job.wait_for("a step between two periodic checkpoints", between_checkpoints)
    workers = [p for p in descendants(job.agents[0]) if "crescendo_trainer" in p.cmdline()]
    assert len(workers) == 1, workers
    kill(workers)  # SIGKILL the trainer process only: its agent restarts the worker group
    job.wait_for("a step after the restart", lambda: any(
        r["kind"] == "pause" for r in job.trace()))
    scraped = {s.name: s.value for family in text_string_to_metric_families(job.scrape(0))
               for s in family.samples}

    records = job.trace()
    resume = next(i for i, r in enumerate(records) if r["kind"] == "resume")
    before = records[:resume]
    done_before_kill = max(r["step"] for r in before if r["kind"] == "step")
    last_checkpoint = max(r["step"] for r in before if r["kind"] == "checkpoint")
    assert records[resume]["step"] == last_checkpoint
    lost = done_before_kill - last_checkpoint
    assert 0 < lost < every
    assert [r.lost_steps for r in restarts(records)] == [lost]
    assert scraped[contract.METRIC_WORKER_RESTARTS] == 1
    assert scraped[contract.METRIC_LOST_STEPS + "_total"] == lost
    assert f"{lost} steps lost (redone), {lost} in all" in job.paths.log(0).read_text()

    assert job.agents[0].wait(timeout=180) == 0, job.logs()
    records = job.trace()
    assert records[-1]["kind"] == "done" and records[-1]["step"] == 800
    assert steps_monotonic(records)


def test_etcd_rendezvous_survives_losing_the_first_agent(
    local_job: Callable[[JobSpec], LocalJob], etcd_endpoint: str
) -> None:
    spec = small_job(
        maxSteps=600,
        rendezvous={"backend": "etcd-v2", "etcdEndpoint": etcd_endpoint, "maxRestarts": 20},
    )
    job = local_job(spec)
    job.add(0)
    job.wait_for("a step at world 1", lambda: len(job.steps(world=1)) >= 1)
    job.add(1)
    job.wait_for("15 steps at world 2", lambda: len(job.steps(world=2)) >= 15)
    kill_tree(job.agents[0])  # with c10d this agent hosts the store and the job would die
    assert job.agents[1].wait(timeout=240) == 0, job.logs()
    records = job.trace()
    assert records[-1]["kind"] == "done" and steps_monotonic(records)
    assert all(r.lost_steps == 0 for r in restarts(records))


def test_gradient_noise_scale_is_measured_through_the_ddp_hook_at_world_2(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    spec = small_job(
        maxSteps=None, epochs=4, logEverySteps=10,
        batch={"initial": 32, "max": 256, "perGpuMax": 64, "policy": "gns",
               "gns": {"cooldownSteps": 20}},
    )
    job = local_job(spec)
    job.add(0)
    job.wait_for("a step at world 1", lambda: len(job.steps(world=1)) >= 1)
    job.add(1)
    assert job.agents[0].wait(timeout=240) == 0, job.logs()
    records = job.trace()
    first_at_2 = min(r["step"] for r in job.steps(world=2))
    noise = [r for r in records if r["kind"] == "measure" and r["name"] == "noise_scale"]
    at_world_2 = [r["value"] for r in noise if r["step"] > first_at_2]
    assert at_world_2 and all(v > 0 for v in at_world_2), "no noise scale from the DDP hook"
    assert {r["code"] for r in records if r["kind"] == "decision"} == {"noise_scale"}
    assert steps_monotonic(records)


def test_conadv_trains_through_a_rescale_and_a_batch_change(
    local_job: Callable[[JobSpec], LocalJob],
) -> None:
    spec = small_job(
        maxSteps=None, epochs=3,
        batch={"initial": 32, "max": 128, "perGpuMax": 16, "policy": "adabatch",
               "adabatch": {"resizeEveryEpochs": 1}},
        adversarial={"method": "conadv", "epsilon": 0.03, "staleness": 1},
    )
    job = local_job(spec)
    job.add(0)
    job.wait_for("10 steps at world 1", lambda: len(job.steps(world=1)) >= 10)
    scraped = {s.name: s.value for family in text_string_to_metric_families(job.scrape(0))
               for s in family.samples}
    assert scraped[contract.METRIC_ADVERSARIAL_RATIO] == 0.5
    job.add(1)
    assert job.agents[0].wait(timeout=240) == 0, job.logs()
    assert job.agents[1].wait(timeout=30) == 0, job.logs()

    records = job.trace()
    assert records[-1]["kind"] == "done" and steps_monotonic(records)
    assert [(r.old_world, r.world) for r in restarts(records)] == [(1, 2)]
    decisions = [(r["old"], r["new"]) for r in records if r["kind"] == "decision"]
    assert decisions == [(32, 64), (64, 128)]
    assert {r["world"] for r in job.steps() if r["batch"] > 32} == {2}
    log = job.paths.log(0).read_text()  # rank 0 logs at INFO; before the rescale and after it
    for world in (1, 2):
        assert f"rank0/{world} INFO ConAdv: staleness 1, attack made on the thread backend" in log
    assert all(math.isfinite(r["loss"]) for r in job.steps() if r["loss"] is not None)
    assert records[-1]["accuracy"] >= 0.9, records[-1]
