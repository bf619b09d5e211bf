"""The controller both backends run: observe replicas and decisions, converge, report.

Owns the `ReplicaBackend` and `DecisionSource` protocols, the pure `reconcile` (observations in;
replicas to create/delete, status and Events out) and `reconcile_once`, which applies it through a
backend. The Kubernetes backend lives in kube.py; `crescendo local` provides a process backend.
Whatever must survive a restart (last scale time, accepted batch, conditions) is passed in as
`JobState`, read by the caller from the object, and written back by the caller from the `Plan`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crescendo_spec.model import JobSpec

from crescendo_operator import conditions as cond
from crescendo_operator import status as job_status
from crescendo_operator.conditions import Condition
from crescendo_operator.metrics_source import ScrapeTarget
from crescendo_operator.scaling import (
    Decision,
    Replica,
    TrainerReading,
    decide,
    overdue_pending,
    plan,
)


class ReplicaBackend(Protocol):
    """Creates, deletes and lists the worker replicas of one job (pods, or local processes)."""

    async def create_replica(self, index: int) -> None: ...

    async def delete_replica(self, index: int) -> None: ...

    async def list_replicas(self) -> list[Replica]: ...


class DecisionSource(Protocol):
    """Reads the newest trainer samples of one job (Prometheus, or the replicas' /metrics)."""

    async def read(self, target: ScrapeTarget) -> TrainerReading: ...


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class JobState:
    """What the previous reconciles left on the object."""

    status: Mapping[str, Any] = field(default_factory=dict)
    last_scale_time: float | None = None
    generation: int | None = None


@dataclass(frozen=True)
class Plan:
    decision: Decision
    create: list[int]
    delete: list[int]  # includes given-back unschedulable replicas
    status: dict[str, Any]
    events: list[Event]
    last_scale_time: float | None  # a new value to persist, or None for unchanged
    decision_time: float | None = None  # sample time of a decision that scaled up


def reconcile(
    job_name: str,
    spec: JobSpec,
    replicas: Sequence[Replica],
    reading: TrainerReading,
    state: JobState,
    now: float,
) -> Plan:
    """One pure reconcile step of one job."""
    prior = state.status
    live = [r for r in replicas if not r.terminating]
    accepted = prior.get("desiredGlobalBatchSize")
    accepted = accepted if isinstance(accepted, int) else None
    events: list[Event] = []
    scaled: Condition | None = None
    new_scale_time: float | None = None
    decision_time: float | None = None

    if job_status.is_terminal(prior):
        decision = Decision(len(live), "Hold", accepted)
        create: list[int] = []
        delete: list[int] = []
    else:
        give_back = overdue_pending(live, now, spec.scaling.schedule_timeout_seconds)
        kept = [r for r in live if r.index not in give_back]
        decision = decide(spec, reading, len(kept), accepted, state.last_scale_time, now)
        if give_back:
            # No room for them: keep the size that fits; the trainers keep the batch through
            # gradient accumulation. The cooldown from now spaces out the next attempt.
            decision = Decision(len(kept), "Unschedulable", decision.desired_batch,
                                decision.rejection)
            message = (
                f"gave back {len(give_back)} pod(s) pending over "
                f"{spec.scaling.schedule_timeout_seconds}s; running at {len(kept)} replicas"
            )
            scaled = Condition(cond.SCALED, False, "Unschedulable", message)
            events.append(Event("Warning", "Unschedulable", message))
            new_scale_time = now
        create, delete = plan((r.index for r in kept), decision.target)
        delete = [*delete, *give_back]
        if decision.reason in ("Decision", "ManualPin") and decision.target != len(kept):
            reason = "ScaledUp" if decision.target > len(kept) else "ScaledDown"
            cause = (
                f"desired batch {decision.desired_batch}"
                if decision.reason == "Decision"
                else decision.message
            )
            message = f"{len(kept)}→{decision.target}: {cause}"
            scaled = Condition(cond.SCALED, True, reason, message)
            events.append(Event("Normal", reason, message))
            new_scale_time = now
            if reason == "ScaledUp" and reading.desired_batch is not None:
                decision_time = reading.desired_batch.timestamp

    after = [r for r in live if r.index not in delete]
    after += [Replica(index=i, phase="Pending", scheduled=False, created=now) for i in create]
    status = job_status.job_status(
        job_name=job_name,
        spec=spec,
        replicas=after,
        reading=reading,
        decision=decision,
        prior=prior,
        now=now,
        generation=state.generation,
        scaled=scaled,
        last_scale_time=new_scale_time,
    )
    before, found = prior.get("conditions") or [], status["conditions"]
    if cond.flipped_to_true(before, found, cond.METRICS_STALE) and decision.rejection:
        events.append(Event("Warning", "MetricsStale", decision.rejection.message))
    for kind, kind_type in ((cond.SUCCEEDED, "Normal"), (cond.FAILED, "Warning")):
        if cond.flipped_to_true(before, found, kind):
            entry = next(c for c in found if c["type"] == kind)
            events.append(Event(kind_type, str(entry["reason"]), str(entry["message"])))
    return Plan(decision, create, delete, status, events, new_scale_time, decision_time)


async def reconcile_once(
    job_name: str,
    namespace: str,
    spec: JobSpec,
    backend: ReplicaBackend,
    source: DecisionSource,
    state: JobState,
    now: float | None = None,
) -> Plan:
    """Observe through `backend` and `source`, decide, and apply the plan's creates/deletes."""
    replicas = await backend.list_replicas()
    target = ScrapeTarget(
        namespace=namespace,
        job=job_name,
        endpoints=tuple(r.endpoint for r in replicas if r.endpoint and not r.terminating),
        window_seconds=spec.scaling.max_staleness_seconds,
    )
    reading = await source.read(target)
    result = reconcile(
        job_name, spec, replicas, reading, state, time.time() if now is None else now
    )
    # Deletes first: a scale-down never overlaps a scale-up in one plan, but a give-back does.
    await asyncio.gather(*(backend.delete_replica(i) for i in result.delete))
    await asyncio.gather(*(backend.create_replica(i) for i in result.create))
    return result
