"""The dashboard and the alert rules against the real exporters, through a real Prometheus.

The static checks (test_dashboard.py, test_rules.py) prove the PromQL parses, names contract
metrics and fires on synthetic series; this proves it matches what the components actually
export, labels included. Two trainer pods of one job (the trainer's own exporter) and the
operator's metrics (its own registry, one reconciled job) are scraped by Debian's Prometheus:
- a healthy job: each panel query, with the dashboard's variables set to that job, returns at
  least one series, and the variable queries list the job (no Grafana server runs here: the
  queries go to Prometheus' HTTP API as Grafana would send them);
- a broken job (NaN loss, stale metrics, an unschedulable pod, a long rescale pause): the rule
  file, loaded by Prometheus itself, turns each of those into a pending alert for that job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from crescendo_operator.opmetrics import OperatorMetrics, job_conditions, job_series
from crescendo_trainer.exporter import TrainerMetrics
from prometheus_client import CollectorRegistry, start_http_server

from tests.chart.render import RULES, alert_rules, dashboard, panel_queries
from tests.chart.rules_promql import label_values_query, substitute
from tests.prometheus_server import free_port, needs_prometheus, prometheus_server

DASHBOARD = dashboard()
NAMESPACE, JOB = "ml", "digits"
VALUES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
          "namespace": NAMESPACE, "job": JOB}
pytestmark = needs_prometheus


def _serve(registry: CollectorRegistry) -> str:
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"127.0.0.1:{port}"


def _trainer_pod(loss: float = 0.5, pause: float = 3.0) -> str:
    metrics = TrainerMetrics(JOB, NAMESPACE)
    for value in vars(metrics).values():
        if hasattr(value, "set") and not isinstance(value, CollectorRegistry):
            value.set(1.0)  # every gauge of the contract, as a trainer mid-run sets them
    metrics.loss.set(loss)
    metrics.rescale_pause.set(pause)
    metrics.samples.inc(4096)
    metrics.lost_steps.inc(0)
    metrics.last_checkpoint_time = time.time()
    for counter in metrics.decisions.values():
        counter.inc()
    return _serve(metrics.registry)


def _operator(conditions: list[dict[str, str]], unschedulable: int = 0) -> str:
    metrics = OperatorMetrics()
    status = {"replicas": 2, "readyReplicas": 2, "restarts": 0, "rescales": 1,
              "conditions": conditions}
    metrics.job(NAMESPACE, JOB, job_series(status, 2, unschedulable), job_conditions(conditions))
    metrics.job_phase(NAMESPACE, JOB, "Running")
    metrics.rescales.labels(direction="up").inc()
    metrics.reconcile_seconds.observe(0.004)
    metrics.reaction_seconds.observe(1.2)
    return _serve(metrics.registry)


def _scrape(trainers: list[str], operator: str) -> str:
    return (
        f"  - {{job_name: crescendo-trainers, static_configs: [{{targets: {trainers}}}]}}\n"
        f"  - {{job_name: crescendo-operator, static_configs: [{{targets: ['{operator}']}}]}}\n"
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A healthy, running job."""
    trainers = [_trainer_pod(), _trainer_pod()]
    scrape = _scrape(trainers, _operator([{"type": "Running", "status": "True"}]))
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), scrape) as url:
        _wait_for_two_scrapes(url, targets=len(trainers) + 1)
        yield url


@pytest.fixture(scope="module")
def broken_job_alerts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """The alerts Prometheus raises (pending or firing) for a job that is in every kind of
    trouble a static sample can show, by alert name: their labels."""
    nan = float("nan")
    trainers = [_trainer_pod(loss=nan, pause=900.0), _trainer_pod(loss=nan, pause=900.0)]
    scrape = _scrape(
        trainers,
        _operator([{"type": "Running", "status": "False"},
                   {"type": "MetricsStale", "status": "True"}], unschedulable=1),
    )
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), scrape, [RULES]) as url:
        _wait_for_two_scrapes(url, targets=len(trainers) + 1)
        deadline = time.monotonic() + 15
        alerts: dict[str, dict[str, str]] = {}
        while len(alerts) < len(EXPECTED_ALERTS) and time.monotonic() < deadline:
            time.sleep(0.5)
            found = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            alerts = {a["labels"]["alertname"]: a["labels"] for a in found}
        return alerts


EXPECTED_ALERTS = (
    "CrescendoTrainerLossNotFinite",
    "CrescendoJobMetricsStale",
    "CrescendoJobReplicasUnschedulable",
    "CrescendoJobRescalePauseTooLong",
    "CrescendoJobStuckPending",
)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for_two_scrapes(url: str, targets: int) -> None:
    """rate() and increase() need two samples of a series inside their window, from every
    target: Prometheus scrapes each at its own offset, so one target's two samples say nothing
    of another's (the trainers' decision counters once had a single sample here)."""
    deadline = time.monotonic() + 30
    expr = "count_over_time(up[1m]) >= 2"
    while len(_query(url, expr)) < targets:
        assert time.monotonic() < deadline, "prometheus scraped too few samples in 30 s"
        time.sleep(0.5)


QUERIES = panel_queries()


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


@pytest.mark.parametrize("alert", EXPECTED_ALERTS)
def test_prometheus_raises_the_alert_for_the_broken_job(
    broken_job_alerts: dict[str, dict[str, str]], alert: str
) -> None:
    assert alert in broken_job_alerts, sorted(broken_job_alerts)
    labels = broken_job_alerts[alert]
    assert (labels["crescendo_namespace"], labels["crescendo_job"]) == (NAMESPACE, JOB)


def test_the_healthy_job_raises_no_alert(prometheus: str) -> None:
    # The healthy job's Prometheus has no rules loaded: evaluate each alert's expression.
    for rule in alert_rules():
        assert _query(prometheus, rule["expr"]) == [], rule["alert"]
