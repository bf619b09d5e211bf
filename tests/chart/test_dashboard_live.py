"""Every dashboard query returns data from the real exporters through a real Prometheus.

The static checks (test_dashboard.py) prove the queries parse and name contract metrics; this
proves they match what the components actually export, labels included: two trainer pods of one
job (the trainer's own exporter, every series set) and the operator's metrics (its own registry,
one reconciled job) are scraped by Debian's Prometheus, and each panel query, with the
dashboard's variables set to that job, must return at least one series. The variable queries
must list the job. No Grafana server runs here: the queries go to Prometheus' HTTP API as
Grafana would send them.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from crescendo_operator.opmetrics import OperatorMetrics, job_conditions, job_series
from crescendo_trainer.exporter import TrainerMetrics
from prometheus_client import CollectorRegistry, start_http_server

from tests.chart.rules_promql import label_values_query, substitute
from tests.prometheus_server import needs_prometheus, prometheus_server

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "charts/crescendo/dashboards/crescendo.json").read_text())
NAMESPACE, JOB = "ml", "digits"
VALUES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
          "namespace": NAMESPACE, "job": JOB}
pytestmark = needs_prometheus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(registry: CollectorRegistry) -> str:
    port = _free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"127.0.0.1:{port}"


def _trainer_pod() -> str:
    metrics = TrainerMetrics(JOB, NAMESPACE)
    for value in vars(metrics).values():
        if hasattr(value, "set") and not isinstance(value, CollectorRegistry):
            value.set(1.0)  # every gauge of the contract, as a trainer mid-run sets them
    metrics.samples.inc(4096)
    metrics.lost_steps.inc(0)
    metrics.last_checkpoint_time = time.time()
    for counter in metrics.decisions.values():
        counter.inc()
    return _serve(metrics.registry)


def _operator() -> str:
    metrics = OperatorMetrics()
    conditions = [{"type": "Running", "status": "True"}]
    status = {"replicas": 2, "readyReplicas": 2, "restarts": 0, "rescales": 1,
              "conditions": conditions}
    metrics.job(NAMESPACE, JOB, job_series(status, 2, 0), job_conditions(conditions))
    metrics.job_phase(NAMESPACE, JOB, "Running")
    metrics.rescales.labels(direction="up").inc()
    metrics.reconcile_seconds.observe(0.004)
    metrics.reaction_seconds.observe(1.2)
    return _serve(metrics.registry)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    trainers = [_trainer_pod(), _trainer_pod()]
    scrape = (
        f"  - {{job_name: crescendo-trainers, static_configs: [{{targets: {trainers}}}]}}\n"
        f"  - {{job_name: crescendo-operator, static_configs: [{{targets: ['{_operator()}']}}]}}\n"
    )
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), scrape) as url:
        _wait_for_two_scrapes(url)
        yield url


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for_two_scrapes(url: str) -> None:
    """rate() and increase() need two samples of a series inside their window."""
    deadline = time.monotonic() + 30
    expr = "count_over_time(crescendo_operator_jobs[1m]) >= 2"
    while not _query(url, expr):
        assert time.monotonic() < deadline, "prometheus scraped too few samples in 30 s"
        time.sleep(0.5)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel.get("type") != "row":
            yield panel
        yield from _panels(panel.get("panels", []))


QUERIES = {f"{p['title']}/{t['refId']}": t["expr"]
           for p in _panels(DASHBOARD["panels"]) for t in p.get("targets", [])}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_panel_query_returns_the_jobs_series(prometheus: str, name: str) -> None:
    result = _query(prometheus, substitute(QUERIES[name], VALUES))
    assert result, f"{name}: no series for {NAMESPACE}/{JOB}"
    for series in result:
        labels = series["metric"]
        assert labels.get("crescendo_job", JOB) == JOB, labels


@pytest.mark.parametrize("variable", ["namespace", "job"])
def test_variable_lists_the_running_job(prometheus: str, variable: str) -> None:
    found = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == variable)
    query = found["query"]["query"] if isinstance(found["query"], dict) else found["query"]
    selector, label = label_values_query(substitute(query, VALUES))
    response = httpx.get(f"{prometheus}/api/v1/label/{label}/values",
                         params={"match[]": selector}, timeout=5)
    assert {NAMESPACE: NAMESPACE, JOB: JOB}[VALUES[variable]] in response.json()["data"]


def test_a_query_for_another_job_returns_nothing(prometheus: str) -> None:
    expr = next(iter(QUERIES.values()))
    assert _query(prometheus, substitute(expr, {**VALUES, "job": "not-running"})) == []
