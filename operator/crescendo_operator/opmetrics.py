"""The operator's own Prometheus metrics: an injected registry served on its own port.

Owns the series of the contract's OPERATOR_METRICS (names in crescendo_spec.contract, listed in
docs/contract.md): reconcile duration, rescales, decision-to-pods-created latency, jobs by phase,
and the per-job `job_*` gauges that the dashboard and the alert rules read. `job_series` is the
pure mapping from one reconcile's outcome to those gauges.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from typing import Any

from crescendo_spec import contract as c
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from crescendo_operator import conditions as cond

# Reconciles are milliseconds; decision latency is seconds (scrape interval + API calls).
RECONCILE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
REACTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
PHASES = ("Pending", "Running", "Scaling", "Succeeded", "Failed")
JOB_LABELS = (c.LABEL_NAMESPACE, c.LABEL_JOB)
# The per-job gauges: metric name → help text.
JOB_GAUGES = {
    c.METRIC_JOB_REPLICAS: "Worker pods of the job that are not terminating.",
    c.METRIC_JOB_READY: "Worker pods of the job that are Ready.",
    c.METRIC_JOB_DESIRED: "The replica count the operator is moving the job to.",
    c.METRIC_JOB_UNSCHEDULABLE: "Worker pods of the job not yet placed on a node.",
    c.METRIC_JOB_RESTARTS: "Container restarts of the job's worker pods.",
    c.METRIC_JOB_RESCALES: "Rescales of the job so far.",
}


def job_series(
    status: Mapping[str, Any], desired_replicas: int, unschedulable: int
) -> dict[str, float]:
    """The per-job gauge values after one reconcile (conditions excluded: see `job_conditions`)."""
    return {
        c.METRIC_JOB_REPLICAS: float(status.get("replicas") or 0),
        c.METRIC_JOB_READY: float(status.get("readyReplicas") or 0),
        c.METRIC_JOB_DESIRED: float(desired_replicas),
        c.METRIC_JOB_UNSCHEDULABLE: float(unschedulable),
        c.METRIC_JOB_RESTARTS: float(status.get("restarts") or 0),
        c.METRIC_JOB_RESCALES: float(status.get("rescales") or 0),
    }


def job_conditions(conditions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """1/0 for every condition type (absent counts as 0), so alerts can test `== 0` too."""
    return {kind: 1.0 if cond.is_true(conditions, kind) else 0.0 for kind in cond.TYPES}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series would double the families the contract lists, for nothing a
        # dashboard reads (process-wide, as in the trainer's exporter).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconcile_seconds = Histogram(
            c.METRIC_OP_RECONCILE,
            "Duration of one reconcile of one job.",
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.rescales = Counter(
            c.METRIC_OP_RESCALES,
            "Replica-count changes made, by direction.",
            ["direction"],
            registry=self.registry,
        )
        self.reaction_seconds = Histogram(
            c.METRIC_OP_REACTION,
            "From the decision sample's time to the new pods being created.",
            registry=self.registry,
            buckets=REACTION_BUCKETS,
        )
        self.jobs = Gauge(
            c.METRIC_OP_JOBS, "AdaptiveBatchJobs by phase.", ["phase"], registry=self.registry
        )
        self._job_gauges = {
            name: Gauge(name, text, JOB_LABELS, registry=self.registry)
            for name, text in JOB_GAUGES.items()
        }
        self._condition = Gauge(
            c.METRIC_JOB_CONDITION,
            "1 if the job's condition of this type is True, else 0.",
            [*JOB_LABELS, c.LABEL_CONDITION],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}

    def job(
        self,
        namespace: str,
        name: str,
        series: Mapping[str, float],
        conditions: Mapping[str, float],
    ) -> None:
        """Set one job's gauges (from `job_series` and `job_conditions`)."""
        for metric, value in series.items():
            self._job_gauges[metric].labels(namespace, name).set(value)
        for kind, value in conditions.items():
            self._condition.labels(namespace, name, kind).set(value)

    def job_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record a job's phase (None: the job is gone, and so are its series)."""
        if phase is None:
            self._phases.pop((namespace, name), None)
            self._forget(namespace, name)
        else:
            self._phases[(namespace, name)] = phase
        tally = Tally(self._phases.values())
        for known in PHASES:
            self.jobs.labels(phase=known).set(tally.get(known, 0))

    def _forget(self, namespace: str, name: str) -> None:
        # KeyError: a job deleted before its first reconcile has no series to remove.
        for gauge in self._job_gauges.values():
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for kind in cond.TYPES:
            with contextlib.suppress(KeyError):
                self._condition.remove(namespace, name, kind)

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)
