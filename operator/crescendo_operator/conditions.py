"""Status conditions in the standard Kubernetes shape (pure).

Owns the one rule that makes conditions trustworthy: `lastTransitionTime` changes only when a
condition's status flips; reason, message and observedGeneration follow the newest observation.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The condition types of an AdaptiveBatchJob, in the order `kubectl describe` shows them.
CREATED = "Created"
RUNNING = "Running"
SCALING = "Scaling"
SCALED = "Scaled"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
METRICS_STALE = "MetricsStale"
TYPES = (CREATED, RUNNING, SCALING, SCALED, SUCCEEDED, FAILED, METRICS_STALE)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def rfc3339(timestamp: float) -> str:
    """Kubernetes' time format (UTC, second precision, Z)."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> float | None:
    """Unix seconds from an RFC 3339 string; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def merge(
    existing: Sequence[Mapping[str, Any]],
    updates: Sequence[Condition],
    now: float,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The condition list after `updates`; other existing conditions are kept unchanged."""
    by_type = {str(c.get("type")): dict(c) for c in existing if c.get("type")}
    for update in updates:
        status = "True" if update.status else "False"
        old = by_type.get(update.type)
        kept = old.get("lastTransitionTime") if old is not None else None
        flipped = old is None or old.get("status") != status or not kept
        entry: dict[str, Any] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": rfc3339(now) if flipped else kept,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[update.type] = entry
    order = {kind: n for n, kind in enumerate(TYPES)}
    return sorted(by_type.values(), key=lambda c: order.get(str(c["type"]), len(order)))


def is_true(conditions: Sequence[Mapping[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def flipped_to_true(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], kind: str
) -> bool:
    """Whether `kind` became True now (to send its Event once, not on every tick)."""
    return is_true(after, kind) and not is_true(before, kind)
