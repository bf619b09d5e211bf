"""A stand-in for the trainers' exporter: a prometheus-client HTTP server on 127.0.0.1.

It serves the contract's metric names with the contract's labels (crescendo_job,
crescendo_namespace), so the operator's direct scrape and a real Prometheus see exactly what a
trainer pod would export. Tests move its values to play the trainers' decisions.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from crescendo_spec import contract
from prometheus_client import CollectorRegistry, Gauge, start_http_server


class FakeTrainer:
    def __init__(self, job: str, namespace: str = "default") -> None:
        self.registry = CollectorRegistry()
        labels = [contract.LABEL_JOB, contract.LABEL_NAMESPACE]
        self._labels = {contract.LABEL_JOB: job, contract.LABEL_NAMESPACE: namespace}

        def gauge(name: str) -> Gauge:
            return Gauge(name, f"fake {name}", labels, registry=self.registry)

        self._gauges = {
            "desired": gauge(contract.METRIC_DESIRED_BATCH),
            "batch": gauge(contract.METRIC_GLOBAL_BATCH),
            "step": gauge(contract.METRIC_STEP),
            "epoch": gauge(contract.METRIC_EPOCH),
            "budget": gauge(contract.METRIC_BUDGET_DONE),
        }
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> FakeTrainer:
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def set(self, **values: float) -> None:
        """e.g. set(desired=256, batch=128, step=40, epoch=1, budget=0)."""
        for key, value in values.items():
            self._gauges[key].labels(**self._labels).set(value)
