"""The scaling decision: how many worker replicas a job should have now (pure).

Owns the rule of DESIGN.md §2/§4: a trainer's desired global batch B' becomes
`clamp(ceil(B' / (G · perGpuMax)), min, max)` replicas (G = GPUs per replica, or trainer processes
per replica on CPU); which samples are trusted (fresh, finite, integral, within the spec's bounds);
the restart-safe cooldown; the manual pin of the scale subresource; and which replica indices to
create or delete (never worker-0, highest first). Both backends (Kubernetes, local) call these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crescendo_spec.model import JobSpec


@dataclass(frozen=True)
class Sample:
    """One metric sample: its value and when it was taken (Unix seconds)."""

    value: float
    timestamp: float


@dataclass(frozen=True)
class TrainerReading:
    """The newest samples of the contract's metrics for one job; None where there is none."""

    desired_batch: Sample | None = None
    global_batch: Sample | None = None
    step: Sample | None = None
    epoch: Sample | None = None
    budget_done: Sample | None = None


@dataclass(frozen=True)
class Replica:
    """What a controller needs to know of one worker replica (a pod, or a local process)."""

    index: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown (the pod phases)
    ready: bool = False
    scheduled: bool = True  # False while a pod waits for a node (GPUs)
    created: float | None = None  # Unix seconds
    # When its trainer container started running (a pod's startedAt; a local agent's start):
    # the start-up grace of MetricsStale counts from it, not from creation, which on a cluster
    # includes scheduling and the image pull.
    started: float | None = None
    restarts: int = 0
    terminating: bool = False
    endpoint: str | None = None  # host:port of its /metrics, for direct scraping


# The rejection of a job whose trainers have exported no desired batch at all (yet).
NO_SAMPLE = "NoSample"


@dataclass(frozen=True)
class Rejection:
    """Why a decision sample was not trusted (→ condition MetricsStale)."""

    reason: str  # CamelCase: NoSample | StaleSample | InvalidValue | OutOfRange
    message: str


@dataclass(frozen=True)
class Decision:
    """The replica count to converge to, and why."""

    target: int
    reason: str  # Initial | Decision | ManualPin | Hold | Cooldown
    desired_batch: int | None  # the accepted batch decision behind `target`, if any
    rejection: Rejection | None = None  # set when the newest sample was ignored
    message: str = ""


def procs_for_batch(spec: JobSpec) -> int:
    """Processes per replica that each hold up to perGpuMax samples (GPUs; on CPU: nproc)."""
    return spec.gpus_per_replica if spec.gpus_per_replica > 0 else spec.procs_per_replica


def replicas_for_batch(batch: int, spec: JobSpec) -> int:
    """Fewest replicas that fit `batch` without accumulation, within [min, max]."""
    needed = math.ceil(batch / (procs_for_batch(spec) * spec.batch.per_gpu_max))
    return clamp_replicas(needed, spec)


def clamp_replicas(count: int, spec: JobSpec) -> int:
    return max(spec.replicas.min, min(spec.replicas.max, count))


def check_decision(sample: Sample | None, spec: JobSpec, now: float) -> int | Rejection:
    """The sample's batch if it can be trusted; otherwise why not."""
    if sample is None:
        return Rejection(NO_SAMPLE, "no desired-batch sample from the trainers")
    value, age = sample.value, now - sample.timestamp
    if age > spec.scaling.max_staleness_seconds:
        return Rejection(
            "StaleSample",
            f"newest desired-batch sample is {age:.0f}s old "
            f"(maxStalenessSeconds {spec.scaling.max_staleness_seconds})",
        )
    if not math.isfinite(value) or value != int(value):
        return Rejection("InvalidValue", f"desired batch {value!r} is not an integer")
    if not 1 <= value <= spec.batch.max:
        return Rejection(
            "OutOfRange", f"desired batch {value:.0f} is outside [1, batch.max={spec.batch.max}]"
        )
    return int(value)


def decide(
    spec: JobSpec,
    reading: TrainerReading,
    current: int,
    accepted_batch: int | None,
    last_scale_time: float | None,
    now: float,
) -> Decision:
    """Replica target from the newest decision, the pin, the cooldown and the current size.

    `current` counts live replicas; `accepted_batch` is the last decision acted on (kept on the
    object, so a restarted operator or a stale metric keeps the size it had).
    """
    checked = check_decision(reading.desired_batch, spec, now)
    rejection = checked if isinstance(checked, Rejection) else None
    batch = checked if isinstance(checked, int) else accepted_batch
    manual = spec.replicas.manual
    if manual is not None:
        # kubectl scale: the user's number wins over the trainers and the cooldown.
        target = clamp_replicas(manual, spec)
        bounds = f"[{spec.replicas.min}, {spec.replicas.max}]"
        note = "" if target == manual else f" (clamped to {bounds})"
        return Decision(target, "ManualPin", batch, rejection, f"pinned to {manual}{note}")
    if current == 0 and last_scale_time is None:
        target = replicas_for_batch(batch, spec) if batch is not None else spec.replicas.start
        return Decision(target, "Initial", batch, rejection)
    wanted = replicas_for_batch(batch, spec) if batch is not None else clamp_replicas(current, spec)
    if wanted == current:
        return Decision(current, "Hold", batch, rejection)
    remaining = cooldown_remaining(spec, last_scale_time, now)
    if remaining > 0:
        return Decision(
            current, "Cooldown", batch, rejection, f"{current}→{wanted} waits {remaining:.0f}s"
        )
    return Decision(wanted, "Decision", batch, rejection)


def cooldown_remaining(spec: JobSpec, last_scale_time: float | None, now: float) -> float:
    if last_scale_time is None:
        return 0.0
    return max(0.0, last_scale_time + spec.scaling.cooldown_seconds - now)


def plan(existing: Iterable[int], target: int) -> tuple[list[int], list[int]]:
    """Indices to create and to delete so that `target` replicas exist.

    Existing replicas are kept where possible (no churn for a gap); new ones take the lowest free
    indices; surplus ones go highest index first. worker-0 hosts the c10d store: it is never
    deleted, and recreated first if it is missing.
    """
    have = set(existing)
    create = [] if 0 in have else [0]
    total = len(have) + len(create)
    index = 1
    while total < target:
        if index not in have:
            create.append(index)
            total += 1
        index += 1
    surplus = max(0, total - max(target, 1))
    delete = sorted(have - {0}, reverse=True)[:surplus]
    return create, delete


def overdue_pending(replicas: Sequence[Replica], now: float, timeout_seconds: float) -> list[int]:
    """Unscheduled replicas older than the timeout, to give back (never worker-0)."""
    return sorted(
        (
            r.index
            for r in replicas
            if r.index != 0
            and not r.terminating
            and r.phase == "Pending"
            and not r.scheduled
            and r.created is not None
            and now - r.created >= timeout_seconds
        ),
        reverse=True,
    )
