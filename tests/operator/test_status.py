"""Status fields and conditions from observed replicas and metrics."""

from __future__ import annotations

from typing import Any

from crescendo_operator import conditions as cond
from crescendo_operator.controller import JobState, reconcile
from crescendo_operator.scaling import Decision, Rejection, Replica, Sample, TrainerReading
from crescendo_operator.status import job_status, replica_from_pod
from crescendo_spec import parse_spec

NOW = 2_000_000.0
SPEC = parse_spec({"gpusPerReplica": 1, "replicas": {"min": 1, "max": 4}, "epochs": 2,
                   "batch": {"initial": 256, "max": 1024, "perGpuMax": 256},
                   "scaling": {"cooldownSeconds": 0}, "rendezvous": {"maxRestarts": 3}})


def running(*indices: int, restarts: int = 0) -> list[Replica]:
    return [Replica(i, "Running", ready=True, created=NOW - 60, restarts=restarts)
            for i in indices]


def status(replicas: list[Replica], reading: TrainerReading | None = None,
           prior: dict[str, Any] | None = None, decision: Decision | None = None,
           now: float = NOW) -> dict[str, Any]:
    return job_status(job_name="j", spec=SPEC, replicas=replicas,
                      reading=reading or TrainerReading(),
                      decision=decision or Decision(len(replicas), "Hold", None),
                      prior=prior or {}, now=now, generation=7)


def conditions(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in found["conditions"]}


def test_status_counts_replicas_and_copies_the_metrics() -> None:
    reading = TrainerReading(global_batch=Sample(512, NOW), step=Sample(1200, NOW),
                             epoch=Sample(1, NOW))
    found = status(running(0, 1), reading)
    assert found["replicas"] == 2 and found["readyReplicas"] == 2
    assert (found["globalBatchSize"], found["step"], found["epoch"]) == (512, 1200, 1)
    assert found["selector"] == "crescendo.dev/job=j,crescendo.dev/role=worker"
    assert found["observedGeneration"] == 7 and found["phase"] == "Running"


def test_last_transition_time_changes_only_when_a_condition_flips() -> None:
    first = status(running(0), now=NOW)
    later = status(running(0), prior=first, now=NOW + 100)
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times[cond.RUNNING] == cond.rfc3339(NOW)
    pending = [Replica(0, "Pending", created=NOW)]
    flipped = status(pending, prior=later, now=NOW + 200)
    running_now = next(c for c in flipped["conditions"] if c["type"] == cond.RUNNING)
    assert running_now["status"] == "False"
    assert running_now["lastTransitionTime"] == cond.rfc3339(NOW + 200)


def test_metrics_stale_is_reported_once_trainers_are_up() -> None:
    rejection = Rejection("StaleSample", "old")
    starting = status([Replica(0, "Pending")], decision=Decision(1, "Hold", None, rejection))
    assert conditions(starting)[cond.METRICS_STALE] == ("False", "TrainersStarting")
    up = status(running(0), decision=Decision(1, "Hold", None, rejection))
    assert conditions(up)[cond.METRICS_STALE] == ("True", "StaleSample")


def test_succeeded_needs_worker_0_exit_0_and_says_whether_the_budget_was_seen() -> None:
    done = [Replica(0, "Succeeded")]
    seen = status(done, TrainerReading(budget_done=Sample(1, NOW)))
    assert conditions(seen)[cond.SUCCEEDED] == ("True", "BudgetReached")
    assert seen["phase"] == "Succeeded"
    unseen = status(done)
    assert conditions(unseen)[cond.SUCCEEDED] == ("True", "TrainerCompleted")


def test_failed_when_restarts_exceed_the_limit() -> None:
    found = status(running(0, 1, restarts=2))
    assert conditions(found)[cond.FAILED] == ("True", "RestartLimitExceeded")
    assert found["phase"] == "Failed"


def test_replica_from_pod_reads_index_readiness_scheduling_and_endpoint() -> None:
    pod = {
        "metadata": {"labels": {"crescendo.dev/replica-index": "2"},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", "podIP": "10.0.0.5",
                   "conditions": [{"type": "Ready", "status": "True"},
                                  {"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"restartCount": 2}]},
    }
    replica = replica_from_pod(pod, 9400)
    assert replica == Replica(2, "Running", ready=True, scheduled=True,
                              created=replica.created if replica else None, restarts=2,
                              endpoint="10.0.0.5:9400")


def test_reconcile_announces_a_rescale_once_with_the_batch() -> None:
    reading = TrainerReading(desired_batch=Sample(1024, NOW - 1))
    plan = reconcile("j", SPEC, running(0, 1), reading, JobState(), NOW)
    assert (plan.create, plan.delete) == ([2, 3], [])
    assert [(e.reason, e.message) for e in plan.events] == [
        ("ScaledUp", "2→4: desired batch 1024")]
    assert plan.status["rescales"] == 1 and plan.last_scale_time == NOW
    assert conditions(plan.status)[cond.SCALED] == ("True", "ScaledUp")


def test_reconcile_gives_back_unschedulable_pods_and_keeps_the_batch() -> None:
    stuck = [*running(0, 1), Replica(2, "Pending", scheduled=False, created=NOW - 301),
             Replica(3, "Pending", scheduled=False, created=NOW - 301)]
    reading = TrainerReading(desired_batch=Sample(1024, NOW - 1))
    prior = {"desiredGlobalBatchSize": 1024}
    plan = reconcile("j", SPEC.model_copy(update={"scaling": SPEC.scaling.model_copy(
        update={"schedule_timeout_seconds": 300})}), stuck, reading, JobState(status=prior), NOW)
    assert (plan.create, plan.delete) == ([], [3, 2])
    assert conditions(plan.status)[cond.SCALED] == ("False", "Unschedulable")
    assert plan.status["desiredGlobalBatchSize"] == 1024
    assert plan.status["replicas"] == 2


def test_a_terminal_job_is_never_rescaled() -> None:
    prior = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "BudgetReached"}]}
    reading = TrainerReading(desired_batch=Sample(1024, NOW - 1))
    plan = reconcile("j", SPEC, running(0), reading, JobState(status=prior), NOW)
    assert (plan.create, plan.delete) == ([], [])
