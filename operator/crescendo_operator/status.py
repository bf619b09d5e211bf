"""The status of an AdaptiveBatchJob from observed replicas and trainer metrics (pure).

Owns: reading a worker Pod into a `Replica`, the status fields (replicas, readyReplicas, selector,
batch sizes, step, epoch, rescales, restarts, lastScaleTime, observedGeneration), the conditions
and the one-word `phase` of the Status printer column. Terminal outcomes: Succeeded when worker-0's
trainer exited 0 (reason BudgetReached when the trainers' budget gauge was seen, TrainerCompleted
otherwise); Failed when the container restarts exceed `rendezvous.maxRestarts` or worker-0 failed.
MetricsStale is True only for a sample that could have been there: not while the trainers start
(no replica ready, or no sample ever seen within `scaling.maxStalenessSeconds` of the first
replica running), so a healthy job's start-up raises no Warning Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crescendo_spec import contract
from crescendo_spec.model import JobSpec

from crescendo_operator import conditions as cond
from crescendo_operator.conditions import Condition
from crescendo_operator.scaling import NO_SAMPLE, Decision, Rejection, Replica, TrainerReading


def replica_from_pod(pod: Mapping[str, Any], metrics_port: int) -> Replica | None:
    """A worker Pod as a Replica; None if it carries no replica index."""
    meta = pod.get("metadata", {})
    try:
        index = int(meta.get("labels", {}).get(contract.POD_LABEL_REPLICA, ""))
    except ValueError:
        return None
    status = pod.get("status", {}) or {}
    pod_conditions = {c.get("type"): c.get("status") for c in status.get("conditions", []) or []}
    ip = status.get("podIP")
    return Replica(
        index=index,
        phase=str(status.get("phase", "Pending")),
        ready=pod_conditions.get("Ready") == "True",
        scheduled=pod_conditions.get("PodScheduled") == "True"
        or bool(pod.get("spec", {}).get("nodeName")),
        created=cond.parse_time(meta.get("creationTimestamp")),
        started=_started(status.get("containerStatuses") or []),
        restarts=sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or []),
        terminating=bool(meta.get("deletionTimestamp")),
        endpoint=f"{ip}:{metrics_port}" if ip else None,
    )


def _started(container_statuses: Sequence[Mapping[str, Any]]) -> float | None:
    """When the last of the pod's running containers started: the pod can serve from then."""
    times = [
        cond.parse_time(((c.get("state") or {}).get("running") or {}).get("startedAt"))
        for c in container_statuses
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def selector(job_name: str) -> str:
    """The label selector of a job's worker pods (the scale subresource's labelSelectorPath)."""
    return f"{contract.POD_LABEL_JOB}={job_name},{contract.POD_LABEL_ROLE}=worker"


def _count(value: float | None, prior: object) -> int | None:
    if value is not None and value == value and value >= 0:  # value == value: not NaN
        return int(value)
    return prior if isinstance(prior, int) else None


def is_terminal(status: Mapping[str, Any]) -> bool:
    """Succeeded or Failed for good (an InvalidSpec failure ends when the spec is fixed)."""
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == cond.SUCCEEDED:
            return True
        if c.get("type") == cond.FAILED and c.get("reason") != "InvalidSpec":
            return True
    return False


def job_status(
    *,
    job_name: str,
    spec: JobSpec,
    replicas: Sequence[Replica],
    reading: TrainerReading,
    decision: Decision,
    prior: Mapping[str, Any],
    now: float,
    generation: int | None,
    scaled: Condition | None = None,
    last_scale_time: float | None = None,
) -> dict[str, Any]:
    """The whole new status; `replicas` is what exists after this tick's creates and deletes."""
    live = sorted((r for r in replicas if not r.terminating), key=lambda r: r.index)
    ready = sum(1 for r in live if r.ready)
    running = sum(1 for r in live if r.phase == "Running")
    restarts = sum(r.restarts for r in replicas)
    worker0 = next((r for r in live if r.index == 0), None)
    budget = reading.budget_done
    budget_reached = bool(prior.get("budgetReached")) or (budget is not None and budget.value >= 1)

    created = bool(live) or bool(prior.get("replicas"))
    updates = [Condition(cond.CREATED, created, "ReplicasCreated" if created else "NoReplicas")]
    if live and running == len(live):
        updates.append(Condition(cond.RUNNING, True, "AllReplicasRunning", f"{running} running"))
    else:
        updates.append(
            Condition(cond.RUNNING, False, "ReplicasPending", f"{running} of {len(live)} running")
        )
    if len(live) != decision.target:
        direction = "ScalingUp" if decision.target > len(live) else "ScalingDown"
        updates.append(Condition(cond.SCALING, True, direction, f"{len(live)}→{decision.target}"))
    elif ready < len(live):
        updates.append(
            Condition(cond.SCALING, True, "WaitingForReady", f"{ready} of {len(live)} ready")
        )
    else:
        updates.append(Condition(cond.SCALING, False, "Stable", f"{len(live)} replicas"))
    if scaled is not None:
        updates.append(scaled)
    updates.append(
        metrics_stale(
            decision.rejection,
            ready=ready,
            # Set once a sample was accepted, and kept on the object across operator restarts.
            sample_seen=prior.get("desiredGlobalBatchSize") is not None,
            running_since=first_running_time(live),
            now=now,
            grace_seconds=spec.scaling.max_staleness_seconds,
        )
    )

    if worker0 is not None and worker0.phase == "Succeeded":
        reason = "BudgetReached" if budget_reached else "TrainerCompleted"
        message = "worker-0 exited 0" + ("" if budget_reached else "; budget gauge never seen")
        updates.append(Condition(cond.SUCCEEDED, True, reason, message))
    else:
        updates.append(Condition(cond.SUCCEEDED, False, "InProgress"))
    if restarts > spec.rendezvous.max_restarts:
        updates.append(
            Condition(
                cond.FAILED,
                True,
                "RestartLimitExceeded",
                f"{restarts} restarts > rendezvous.maxRestarts={spec.rendezvous.max_restarts}",
            )
        )
    elif worker0 is not None and worker0.phase == "Failed":
        updates.append(Condition(cond.FAILED, True, "WorkerFailed", "worker-0 failed"))
    else:
        updates.append(Condition(cond.FAILED, False, "InProgress"))

    merged = cond.merge(prior.get("conditions") or [], updates, now, generation)
    last_scale = last_scale_time if last_scale_time is not None else None
    status: dict[str, Any] = {
        "phase": phase_of(merged),
        "replicas": len(live),
        "readyReplicas": ready,
        "selector": selector(job_name),
        "globalBatchSize": _count(
            reading.global_batch.value if reading.global_batch else None,
            prior.get("globalBatchSize"),
        ),
        "desiredGlobalBatchSize": decision.desired_batch,
        "step": _count(reading.step.value if reading.step else None, prior.get("step")),
        "epoch": _count(reading.epoch.value if reading.epoch else None, prior.get("epoch")),
        "budgetReached": budget_reached,
        "rescales": int(prior.get("rescales") or 0) + (1 if scaled and scaled.status else 0),
        "restarts": restarts,
        "lastScaleTime": cond.rfc3339(last_scale) if last_scale else prior.get("lastScaleTime"),
        "observedGeneration": generation,
        "conditions": merged,
    }
    return {key: value for key, value in status.items() if value is not None}


def first_running_time(replicas: Sequence[Replica]) -> float | None:
    """When the first of these replicas started running (its start, else its creation)."""
    times = [
        r.started if r.started is not None else r.created
        for r in replicas
        if r.phase == "Running"
    ]
    known = [t for t in times if t is not None]
    return min(known) if known else None


def metrics_stale(
    rejection: Rejection | None,
    *,
    ready: int,
    sample_seen: bool,
    running_since: float | None,
    now: float,
    grace_seconds: float,
) -> Condition:
    """The MetricsStale condition: True (and a Warning Event) only for a sample that is missing
    or bad when the trainers could have exported a good one.

    Start-up is not an episode: trainers export their first desired batch only once the model,
    the data and the process group are up (seconds on CPU, longer with a large data set), so a
    job that never had a sample gets `grace_seconds` (scaling.maxStalenessSeconds, the age at
    which a seen sample counts as stale) from its first replica running. `sample_seen` comes from
    the object (a desiredGlobalBatchSize was accepted); once a sample was seen, a missing one is
    stale at once, as is a bad value at any time.
    """
    if rejection is None:
        return Condition(cond.METRICS_STALE, False, "FreshDecision")
    if ready == 0:
        # Trainers that are not up yet export nothing: not a metrics problem.
        return Condition(cond.METRICS_STALE, False, "TrainersStarting")
    waited = 0.0 if running_since is None else max(0.0, now - running_since)
    if rejection.reason == NO_SAMPLE and not sample_seen and waited <= grace_seconds:
        return Condition(
            cond.METRICS_STALE,
            False,
            "AwaitingFirstSample",
            # A message that does not change each tick: the status is not rewritten for it.
            "no desired-batch sample yet; stale if none within "
            f"scaling.maxStalenessSeconds={grace_seconds:g}s of the first replica running",
        )
    return Condition(cond.METRICS_STALE, True, rejection.reason, rejection.message)


def phase_of(conditions: Sequence[Mapping[str, Any]]) -> str:
    for kind in (cond.FAILED, cond.SUCCEEDED, cond.SCALING, cond.RUNNING):
        if cond.is_true(conditions, kind):
            return kind
    return "Pending"


def invalid_spec_status(
    problems: Sequence[str], prior: Mapping[str, Any], now: float, generation: int | None
) -> dict[str, Any]:
    """Failed/InvalidSpec: the job is not run; the message lists every bad field."""
    failed = Condition(cond.FAILED, True, "InvalidSpec", "; ".join(problems))
    merged = cond.merge(prior.get("conditions") or [], [failed], now, generation)
    return {"phase": "Failed", "observedGeneration": generation, "conditions": merged}
