"""Status fields and conditions from observed replicas and metrics."""

from __future__ import annotations

from typing import Any

from crescendo_operator import conditions as cond
from crescendo_operator.controller import JobState, reconcile
from crescendo_operator.scaling import (
    NO_SAMPLE,
    Decision,
    Rejection,
    Replica,
    Sample,
    TrainerReading,
)
from crescendo_operator.status import job_status, metrics_stale, replica_from_pod
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


NO_SAMPLE_YET = Rejection(NO_SAMPLE, "no desired-batch sample from the trainers")
GRACE = SPEC.scaling.max_staleness_seconds


def stale_of(rejection: Rejection | None = NO_SAMPLE_YET, *, ready: int = 1,
             seen: bool = False, waited: float | None = 5.0) -> tuple[bool, str]:
    found = metrics_stale(rejection, ready=ready, sample_seen=seen,
                          running_since=None if waited is None else NOW - waited, now=NOW,
                          grace_seconds=GRACE)
    return found.status, found.reason


def test_no_sample_yet_during_start_up_is_awaited_not_stale() -> None:
    assert stale_of(waited=0) == (False, "AwaitingFirstSample")
    assert stale_of(waited=GRACE) == (False, "AwaitingFirstSample")
    assert stale_of(waited=None) == (False, "AwaitingFirstSample")  # nothing ran yet
    assert stale_of(ready=0, waited=10 * GRACE) == (False, "TrainersStarting")


def test_no_sample_ever_past_the_grace_is_stale() -> None:
    assert stale_of(waited=GRACE + 1) == (True, NO_SAMPLE)


def test_a_seen_sample_that_went_missing_is_stale_at_once() -> None:
    assert stale_of(seen=True, waited=1) == (True, NO_SAMPLE)


def test_a_bad_or_old_sample_is_stale_even_during_start_up() -> None:
    for reason in ("StaleSample", "InvalidValue", "OutOfRange"):
        assert stale_of(Rejection(reason, "bad"), waited=1) == (True, reason)
    assert stale_of(None, waited=1) == (False, "FreshDecision")


def started(seconds_ago: float, created_ago: float | None = None) -> list[Replica]:
    created = NOW - (seconds_ago if created_ago is None else created_ago)
    return [Replica(0, "Running", ready=True, created=created, started=NOW - seconds_ago)]


def stale_events(plan_events: list[Any]) -> list[str]:
    return [e.message for e in plan_events if e.reason == cond.METRICS_STALE]


def test_reconcile_sends_no_metrics_stale_event_before_the_first_sample() -> None:
    # Created long ago (a cluster's image pull), started just now: the grace counts from start.
    plan = reconcile("j", SPEC, started(5, created_ago=10 * GRACE), TrainerReading(),
                     JobState(), NOW)
    assert conditions(plan.status)[cond.METRICS_STALE] == ("False", "AwaitingFirstSample")
    assert stale_events(plan.events) == []
    later = reconcile("j", SPEC, started(5 + GRACE + 1), TrainerReading(),
                      JobState(status=plan.status), NOW + GRACE + 1)
    assert conditions(later.status)[cond.METRICS_STALE] == ("True", NO_SAMPLE)
    assert stale_events(later.events) == ["no desired-batch sample from the trainers"]


def test_reconcile_sends_metrics_stale_when_a_seen_sample_goes_missing() -> None:
    fresh = reconcile("j", SPEC, started(5), TrainerReading(desired_batch=Sample(256, NOW)),
                      JobState(), NOW)
    assert conditions(fresh.status)[cond.METRICS_STALE] == ("False", "FreshDecision")
    gone = reconcile("j", SPEC, started(10), TrainerReading(), JobState(status=fresh.status),
                     NOW + 5)
    assert conditions(gone.status)[cond.METRICS_STALE] == ("True", NO_SAMPLE)
    assert len(stale_events(gone.events)) == 1


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


def test_replica_from_pod_reads_when_its_containers_started_running() -> None:
    pod = {
        "metadata": {"labels": {"crescendo.dev/replica-index": "0"},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", "containerStatuses": [
            {"restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:03:00Z"}}},
            {"restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:03:30Z"}}},
        ]},
    }
    replica = replica_from_pod(pod, 9400)
    assert replica is not None and replica.created is not None
    assert replica.started == replica.created + 210  # the last container to start


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
