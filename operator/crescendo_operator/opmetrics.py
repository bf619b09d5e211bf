"""The operator's own Prometheus metrics: an injected registry served on its own port.

Owns the names (prefix `crescendo_operator_`, base units, counters end in `_total`): reconcile
duration, rescales, decision-to-pods-created latency, and jobs by phase.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PREFIX = "crescendo_operator_"
# Reconciles are milliseconds; decision latency is seconds (scrape interval + API calls).
RECONCILE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
REACTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
PHASES = ("Pending", "Running", "Scaling", "Succeeded", "Failed")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconcile_seconds = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Duration of one reconcile of one job.",
            registry=self.registry,
            buckets=RECONCILE_BUCKETS,
        )
        self.rescales = Counter(
            PREFIX + "rescales",
            "Replica-count changes made, by direction.",
            ["direction"],
            registry=self.registry,
        )
        self.reaction_seconds = Histogram(
            PREFIX + "decision_to_pods_created_seconds",
            "From the decision sample's time to the new pods being created.",
            registry=self.registry,
            buckets=REACTION_BUCKETS,
        )
        self.jobs = Gauge(
            PREFIX + "jobs", "AdaptiveBatchJobs by phase.", ["phase"], registry=self.registry
        )
        self._phases: dict[tuple[str, str], str] = {}

    def job_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record a job's phase (None: the job is gone) and refresh the per-phase gauge."""
        if phase is None:
            self._phases.pop((namespace, name), None)
        else:
            self._phases[(namespace, name)] = phase
        tally = Tally(self._phases.values())
        for known in PHASES:
            self.jobs.labels(phase=known).set(tally.get(known, 0))

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)
