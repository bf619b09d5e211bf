"""The kopf handlers of the operator: wiring only, registered on a given registry.

Owns which kopf reaction calls which pure function or backend call: login, start-up/clean-up of
the shared clients, the index of worker pods, spec validation on create/resume/update (invalid →
Failed/InvalidSpec, a Warning Event, `kopf.PermanentError`, nothing created), and the per-job
timer that runs `controller.reconcile_once` every scrape interval. `register` takes the registry
and the configuration so tests and the CLI can build an operator without import-time globals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from crescendo_spec import contract
from crescendo_spec.crd import GROUP, PLURAL, VERSION
from crescendo_spec.model import JobSpec
from crescendo_spec.parse import SpecError

from crescendo_operator import conditions as cond
from crescendo_operator import kube
from crescendo_operator.admission import parse_for_cluster
from crescendo_operator.config import OperatorConfig
from crescendo_operator.controller import DecisionSource, JobState, Plan, reconcile_once
from crescendo_operator.metrics_source import DirectScrapeSource, PrometheusSource
from crescendo_operator.opmetrics import OperatorMetrics, job_conditions, job_series
from crescendo_operator.scaling import Replica
from crescendo_operator.status import invalid_spec_status, replica_from_pod

logger = logging.getLogger(__name__)
RESOURCE = (GROUP, VERSION, PLURAL)
# Created/deleted pods not yet seen by the watch are trusted this long, then forgotten.
EXPECTATION_SECONDS = 30.0


@dataclass
class Runtime:
    """Clients shared by all handlers, made at start-up and closed at clean-up."""

    config: OperatorConfig
    metrics: OperatorMetrics
    api: kube.KubeApi | None = None
    connection: kopf.ConnectionInfo | None = None  # the newest login, shared with kube.KubeApi
    http: httpx.AsyncClient | None = None
    prometheus: DecisionSource | None = None  # None when CRESCENDO_PROMETHEUS_URL is unset
    direct: DecisionSource | None = None

    def source_for(self, spec: JobSpec) -> DecisionSource:
        """The job's `scaling.metricsSource`; without a configured Prometheus every job is read
        by scraping its pods (DESIGN.md §4: the fallback when no Prometheus is configured)."""
        if spec.scaling.metrics_source == "prometheus" and self.prometheus is not None:
            return self.prometheus
        assert self.direct is not None, "the start-up handler has not run"
        return self.direct


@dataclass
class JobMemory:
    """Per-job memory of this operator process: an optimisation, never the source of truth.

    The watch lags our own writes by a few milliseconds; without this, the next tick would
    recount pods it has just created (409, harmless) and announce the same rescale twice.
    """

    status: dict[str, Any] | None = None
    last_scale_time: float | None = None
    created: dict[int, float] = field(default_factory=dict)
    deleted: dict[int, float] = field(default_factory=dict)

    def observed(self, watched: Iterable[Replica], now: float) -> list[Replica]:
        seen = {r.index: r for r in watched}
        for book in (self.created, self.deleted):
            for index, at in list(book.items()):
                gone = index not in seen
                if now - at > EXPECTATION_SECONDS or (book is self.created) != gone:
                    del book[index]  # expired, or the watch has caught up
        merged = [r for i, r in seen.items() if i not in self.deleted]
        merged += [
            Replica(i, "Pending", scheduled=False, created=t) for i, t in self.created.items()
        ]
        return merged


def _spec_or_report(
    body: kopf.Body, patch: kopf.Patch, generation: int | None
) -> JobSpec:
    try:
        return parse_for_cluster(body.get("spec") or {})
    except SpecError as exc:
        patch.status.update(invalid_spec_status(exc.problems, body.status, time.time(), generation))
        kopf.warn(body, reason="InvalidSpec", message="; ".join(exc.problems))
        raise kopf.PermanentError(str(exc)) from None


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> Runtime:
    """Register every handler on `registry`; the returned Runtime is filled in at start-up."""
    runtime = Runtime(config=config, metrics=OperatorMetrics())

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None
        if config.kube_url:
            info = kopf.ConnectionInfo(server=config.kube_url, insecure=True)
        else:
            # A registered login handler replaces kopf's defaults: call them explicitly.
            info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
                **kwargs
            )
        runtime.connection = info
        return info

    @kopf.on.startup(registry=registry, id="startup")
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # One operator replica (the chart runs one): no peering resource needed.
        settings.peering.standalone = True
        # No watch on CRDs or Namespaces: they would need cluster-wide list/watch even when the
        # operator serves a few namespaces (least privilege, charts/crescendo RBAC). The CRD is
        # installed before the operator starts, and the namespaces are given by exact name.
        settings.scanning.disabled = True
        settings.posting.level = logging.INFO
        runtime.api = kube.KubeApi(lambda: runtime.connection, config.http_timeout_seconds * 5)
        runtime.http = httpx.AsyncClient(timeout=config.http_timeout_seconds)
        if config.prometheus_url:
            runtime.prometheus = PrometheusSource(config.prometheus_url, runtime.http)
        runtime.direct = DirectScrapeSource(runtime.http)
        if config.metrics_port:
            runtime.metrics.serve(config.metrics_port)

    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(**_: Any) -> None:
        if runtime.http is not None:
            await runtime.http.aclose()
        if runtime.api is not None:
            await runtime.api.close()

    @kopf.index(
        "pods",
        registry=registry,
        id="worker_pods",
        labels={contract.POD_LABEL_ROLE: "worker", contract.POD_LABEL_JOB: kopf.PRESENT},
    )
    def worker_pods(
        body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> Any:
        ports = [
            p.get("containerPort")
            for c in body.get("spec", {}).get("containers", [])
            for p in c.get("ports", [])
            if p.get("name") == "metrics"
        ]
        replica = replica_from_pod(body, int(ports[0]) if ports else 0)
        if replica is None:
            return None
        return {(namespace, labels[contract.POD_LABEL_JOB]): replica}

    @kopf.on.create(*RESOURCE, registry=registry, id="validate")
    @kopf.on.resume(*RESOURCE, registry=registry, id="validate-resumed")
    @kopf.on.update(*RESOURCE, registry=registry, id="validate-updated", field="spec")
    async def validate(
        body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None, uid: str, **_: Any
    ) -> None:
        spec = _spec_or_report(body, patch, body.metadata.get("generation"))
        assert runtime.api is not None and namespace is not None  # a namespaced resource
        backend = kube.KubeReplicaBackend(runtime.api, name, namespace, spec, uid, [])
        await backend.ensure_service()
        if cond.is_true(body.status.get("conditions") or [], cond.FAILED):
            # A fixed spec clears the InvalidSpec failure; the timer writes the rest.
            patch.status["conditions"] = cond.merge(
                body.status.get("conditions") or [],
                [cond.Condition(cond.FAILED, False, "SpecValid")],
                time.time(),
                body.metadata.get("generation"),
            )

    @kopf.timer(*RESOURCE, registry=registry, id="reconcile",
                interval=config.scrape_interval_seconds)
    async def reconcile(
        body: kopf.Body,
        patch: kopf.Patch,
        name: str,
        namespace: str | None,
        uid: str,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        try:
            spec = parse_for_cluster(body.get("spec") or {})
        except SpecError:
            return  # reported by `validate`; nothing runs until the spec is fixed
        assert namespace is not None  # a namespaced resource
        started = time.perf_counter()
        now = time.time()
        memory: JobMemory = memo.setdefault("crescendo", JobMemory())
        annotated = cond.parse_time(body.metadata.annotations.get(contract.ANNOTATION_LAST_SCALE))
        state = JobState(
            status=memory.status if memory.status is not None else dict(body.status),
            last_scale_time=max(
                (t for t in (annotated, memory.last_scale_time) if t is not None), default=None
            ),
            generation=body.metadata.get("generation"),
        )
        pods: kopf.Index[tuple[str, str], Replica] = kwargs["worker_pods"]  # the index above
        observed = memory.observed(pods.get((namespace, name), []), now)
        assert runtime.api is not None
        backend = kube.KubeReplicaBackend(runtime.api, name, namespace, spec, uid, observed)
        source = runtime.source_for(spec)
        result = await reconcile_once(name, namespace, spec, backend, source, state, now)
        unchanged = result.status == state.status
        _remember(memory, result, now)
        _write(body, patch, result, status_changed=not unchanged)
        _record(runtime.metrics, namespace, name, result, started)
        unschedulable = sum(1 for r in observed if not r.scheduled and not r.terminating)
        runtime.metrics.job(
            namespace,
            name,
            job_series(result.status, result.decision.target, unschedulable),
            job_conditions(result.status.get("conditions") or []),
        )

    @kopf.on.delete(*RESOURCE, registry=registry, id="forget", optional=True)
    def forget(name: str, namespace: str | None, **_: Any) -> None:
        # Children go by ownerReferences (garbage collection); only our gauges need updating.
        runtime.metrics.job_phase(namespace or "", name, None)

    return runtime


def _remember(memory: JobMemory, result: Plan, now: float) -> None:
    memory.status = result.status
    for index in result.create:
        memory.created[index] = now
        memory.deleted.pop(index, None)
    for index in result.delete:
        memory.deleted[index] = now
        memory.created.pop(index, None)
    if result.last_scale_time is not None:
        memory.last_scale_time = result.last_scale_time


def _write(body: kopf.Body, patch: kopf.Patch, result: Plan, *, status_changed: bool) -> None:
    if status_changed:  # a steady job costs no API writes
        patch.status.update(result.status)
    if result.last_scale_time is not None:
        patch.metadata.annotations[contract.ANNOTATION_LAST_SCALE] = cond.rfc3339(
            result.last_scale_time
        )
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _record(
    metrics: OperatorMetrics, namespace: str, name: str, result: Plan, started: float
) -> None:
    metrics.reconcile_seconds.observe(time.perf_counter() - started)
    metrics.job_phase(namespace, name, str(result.status.get("phase")))
    for event in result.events:
        if event.reason in ("ScaledUp", "ScaledDown"):
            metrics.rescales.labels(direction=event.reason.removeprefix("Scaled").lower()).inc()
    if result.decision_time is not None:
        metrics.reaction_seconds.observe(max(0.0, time.time() - result.decision_time))
