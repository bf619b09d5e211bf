"""The real kopf operator against the API emulator, reading a fake trainer's /metrics directly."""

from __future__ import annotations

import time
from typing import Any

from crescendo_spec import contract

from tests.operator.conftest import Cluster, OperatorRunner, eventually, job_manifest
from tests.operator.fake_trainer import FakeTrainer

INTERVAL = 0.3  # the operator's scrape/reconcile period in these tests


async def _pods(cluster: Cluster, count: int) -> dict[str, dict[str, Any]] | None:
    pods = await cluster.pods()
    return pods if len(pods) == count else None


async def _condition(cluster: Cluster, kind: str, status: str = "True") -> dict[str, Any] | None:
    job = await cluster.job()
    for found in job.get("status", {}).get("conditions", []):
        if found["type"] == kind and found["status"] == status:
            return dict(found)
    return None


async def _start(cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer,
                 **spec: Any) -> dict[str, dict[str, Any]]:
    trainer.set(desired=64, batch=64, step=10, epoch=0, budget=0)
    operator.start(interval=INTERVAL)
    await cluster.apply(job_manifest(metrics={"port": trainer.port}, **spec))
    pods: dict[str, dict[str, Any]] = await eventually(lambda: _pods(cluster, 2))
    return pods


async def test_applied_job_gets_service_and_pods_with_torchrun_and_env(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    pods = await _start(cluster, operator, trainer)
    assert sorted(pods) == ["digits-worker-0", "digits-worker-1"]
    container = pods["digits-worker-1"]["spec"]["containers"][0]
    assert container["command"][:3] == ["torchrun", "--nnodes=1:4", "--nproc-per-node=1"]
    assert "--rdzv-endpoint=digits-worker-0.digits.default.svc:29400" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[contract.ENV_REPLICA_INDEX] == "1" and env[contract.ENV_JOB_NAME] == "digits"
    job = await cluster.job()
    owner = pods["digits-worker-0"]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == job["metadata"]["uid"]
    assert [s["metadata"]["name"] for s in await cluster.services()] == ["digits"]
    running = await eventually(lambda: _condition(cluster, "Running"))
    assert running["reason"] == "AllReplicasRunning"
    job = await cluster.job()
    assert job["status"]["phase"] == "Running" and job["status"]["step"] == 10


async def test_raised_decision_adds_pods_within_one_interval_plus_a_second(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    started = time.monotonic()
    trainer.set(desired=128)
    pods = await eventually(lambda: _pods(cluster, 4), timeout=INTERVAL + 1.0)
    elapsed = time.monotonic() - started
    assert sorted(pods)[-1] == "digits-worker-3" and elapsed <= INTERVAL + 1.0
    events = await eventually(lambda: cluster.events("ScaledUp"))
    assert events[0]["message"] == "2→4: desired batch 128"
    job = await eventually(lambda: _rescales(cluster, 1))
    assert job["status"]["desiredGlobalBatchSize"] == 128
    assert contract.ANNOTATION_LAST_SCALE in job["metadata"]["annotations"]


async def test_operator_metrics_follow_the_job_and_vanish_with_it(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    assert operator.runtime is not None
    registry = operator.runtime.metrics.registry
    labels = {contract.LABEL_NAMESPACE: "default", contract.LABEL_JOB: "digits"}

    def sample(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    async def settled(replicas: float, ready: float) -> bool:
        return (sample(contract.METRIC_JOB_REPLICAS), sample(contract.METRIC_JOB_READY)) == (
            replicas, ready)

    await eventually(lambda: settled(2, 2))
    assert sample(contract.METRIC_JOB_CONDITION, condition="Running") == 1
    assert sample(contract.METRIC_JOB_CONDITION, condition="MetricsStale") == 0
    trainer.set(desired=128)
    await eventually(lambda: settled(4, 4))
    assert sample(contract.METRIC_JOB_DESIRED) == 4
    assert sample(contract.METRIC_JOB_RESCALES) == 1
    assert registry.get_sample_value(contract.METRIC_OP_RESCALES + "_total",
                                     {"direction": "up"}) == 1
    trainer.set(desired=float("nan"))
    await eventually(lambda: _condition(cluster, "MetricsStale"))
    await eventually(lambda: _true(sample(contract.METRIC_JOB_CONDITION,
                                          condition="MetricsStale") == 1))
    await cluster.delete_job()
    await eventually(lambda: _true(sample(contract.METRIC_JOB_REPLICAS) is None))
    assert sample(contract.METRIC_JOB_CONDITION, condition="Running") is None


async def _true(value: bool) -> bool:
    return value


async def _rescales(cluster: Cluster, count: int) -> dict[str, Any] | None:
    job = await cluster.job()
    return job if job.get("status", {}).get("rescales") == count else None


async def test_lowered_decision_removes_highest_pods_and_keeps_worker_0(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    trainer.set(desired=128)
    await eventually(lambda: _pods(cluster, 4))
    trainer.set(desired=32)
    pods = await eventually(lambda: _pods(cluster, 1))
    assert list(pods) == ["digits-worker-0"]
    assert await eventually(lambda: cluster.events("ScaledDown"))


async def test_bad_values_set_metrics_stale_and_keep_the_size(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    await eventually(lambda: _condition(cluster, "MetricsStale", "False"))
    for bad, reason in ((float("nan"), "InvalidValue"), (-64, "OutOfRange"),
                        (100.5, "InvalidValue"), (1_000_000, "OutOfRange")):
        trainer.set(desired=bad)
        found = await eventually(lambda: _condition(cluster, "MetricsStale"))
        assert found["reason"] == reason, found
        assert len(await cluster.pods()) == 2
        trainer.set(desired=64)
        await eventually(lambda: _condition(cluster, "MetricsStale", "False"))
    warnings = await cluster.events("MetricsStale")
    assert len(warnings) == 4 and all(e["type"] == "Warning" for e in warnings)


async def test_deleting_the_job_removes_its_children(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    await cluster.delete_job()
    await eventually(lambda: _no_children(cluster))


async def _no_children(cluster: Cluster) -> bool:
    return await cluster.pods() == {} and await cluster.services() == []


async def test_operator_restart_mid_way_creates_no_duplicate_pods(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    pods = await _start(cluster, operator, trainer)
    uids = {name: pod["metadata"]["uid"] for name, pod in pods.items()}
    await eventually(lambda: _condition(cluster, "Running"))
    await operator.stop()
    operator.start(interval=INTERVAL)
    await eventually(lambda: _condition(cluster, "Running"))
    time_after_restart = time.monotonic()
    while time.monotonic() - time_after_restart < 3 * INTERVAL:
        assert len(await cluster.pods()) == 2
        await eventually(lambda: _condition(cluster, "Running"))
    now = {name: pod["metadata"]["uid"] for name, pod in (await cluster.pods()).items()}
    assert now == uids
    trainer.set(desired=96)
    await eventually(lambda: _pods(cluster, 3))
    assert cluster.pod_creations() == 3  # worker-0, worker-1 once; then worker-2


async def test_invalid_spec_fails_with_the_field_path_and_creates_nothing(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    operator.start(interval=INTERVAL)
    bad = job_manifest(batch={"initial": 512, "max": 256})
    await cluster.apply(bad)
    failed = await eventually(lambda: _condition(cluster, "Failed"))
    assert failed["reason"] == "InvalidSpec"
    assert "spec.batch: initial (512) must be <= max (256)" in failed["message"]
    warnings = await eventually(lambda: cluster.events("InvalidSpec"))
    assert warnings[0]["type"] == "Warning"
    assert await cluster.pods() == {} and await cluster.services() == []
    assert (await cluster.job())["status"]["phase"] == "Failed"


async def test_unschedulable_pods_are_given_back_with_condition_scaled_false(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    cluster.emulator.node_capacity = 2
    await _start(cluster, operator, trainer, scaling={"scheduleTimeoutSeconds": 1,
                                                      "cooldownSeconds": 30})
    trainer.set(desired=128)
    await eventually(lambda: _pods(cluster, 4))
    scaled = await eventually(lambda: _condition(cluster, "Scaled", "False"), timeout=4)
    assert scaled["reason"] == "Unschedulable"
    pods = await eventually(lambda: _pods(cluster, 2))
    assert sorted(pods) == ["digits-worker-0", "digits-worker-1"]
    job = await cluster.job()
    assert job["status"]["desiredGlobalBatchSize"] == 128  # the decision is kept


async def test_manual_scale_pins_the_count_until_cleared(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    await cluster.patch_job("digits", {"spec": {"replicas": {"manual": 3}}})
    await eventually(lambda: _pods(cluster, 3))
    trainer.set(desired=128)  # would be 4 replicas: the pin wins
    await eventually(lambda: _condition(cluster, "Scaled"))
    for _ in range(3):
        assert len(await cluster.pods()) == 3
        await eventually(lambda: _rescales_at_least(cluster, 1))
    await cluster.patch_job("digits", {"spec": {"replicas": {"manual": None}}})
    await eventually(lambda: _pods(cluster, 4))


async def _rescales_at_least(cluster: Cluster, count: int) -> bool:
    return int((await cluster.job()).get("status", {}).get("rescales", 0)) >= count


async def test_worker_0_exit_with_budget_reached_is_succeeded(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer
) -> None:
    await _start(cluster, operator, trainer)
    trainer.set(budget=1, step=500, epoch=6)
    await eventually(lambda: _budget(cluster))
    await cluster.emulator.set_status("v1/pods", "default", "digits-worker-0",
                                      {"phase": "Succeeded"})
    done = await eventually(lambda: _condition(cluster, "Succeeded"))
    assert done["reason"] == "BudgetReached"
    assert (await cluster.job())["status"]["phase"] == "Succeeded"
    trainer.set(desired=256)
    assert len(await cluster.pods()) == 2  # a finished job is never rescaled


async def _budget(cluster: Cluster) -> bool:
    return bool((await cluster.job()).get("status", {}).get("budgetReached"))
