"""The operator's own metrics: per-job gauges from a reconcile, names from the contract."""

from __future__ import annotations

import subprocess

from crescendo_operator.opmetrics import OperatorMetrics, job_conditions, job_series
from crescendo_spec import contract
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_server import PROMTOOL, with_promtool

STATUS = {
    "replicas": 3,
    "readyReplicas": 2,
    "restarts": 5,
    "rescales": 4,
    "conditions": [
        {"type": "Running", "status": "False"},
        {"type": "MetricsStale", "status": "True"},
    ],
}


def test_job_series_reads_status_and_the_scaling_target() -> None:
    assert job_series(STATUS, desired_replicas=4, unschedulable=1) == {
        contract.METRIC_JOB_REPLICAS: 3,
        contract.METRIC_JOB_READY: 2,
        contract.METRIC_JOB_DESIRED: 4,
        contract.METRIC_JOB_UNSCHEDULABLE: 1,
        contract.METRIC_JOB_RESTARTS: 5,
        contract.METRIC_JOB_RESCALES: 4,
    }


def test_job_series_of_an_empty_status_is_zero_not_missing() -> None:
    assert set(job_series({}, 0, 0).values()) == {0.0}


def test_every_condition_type_gets_a_value_and_absent_ones_are_zero() -> None:
    values = job_conditions(STATUS["conditions"])  # type: ignore[arg-type]
    assert values["MetricsStale"] == 1 and values["Running"] == 0
    assert values["Failed"] == 0 and len(values) == 7


def _exposed(metrics: OperatorMetrics) -> set[str]:
    text = generate_latest(metrics.registry).decode()
    return {family.name for family in text_string_to_metric_families(text)}


def test_exposed_families_are_exactly_the_contracts_operator_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.job("ns", "a", job_series(STATUS, 4, 1), job_conditions([]))
    metrics.job_phase("ns", "a", "Running")
    metrics.rescales.labels(direction="up").inc()
    # The parser names counters without their _total suffix, as the contract does.
    assert _exposed(metrics) == set(contract.OPERATOR_METRICS)


def test_a_deleted_job_leaves_no_series_and_other_jobs_keep_theirs() -> None:
    metrics = OperatorMetrics()
    for name in ("a", "b"):
        metrics.job("ns", name, job_series(STATUS, 4, 0), job_conditions([]))
        metrics.job_phase("ns", name, "Running")
    metrics.job_phase("ns", "a", None)
    labels = {contract.LABEL_NAMESPACE: "ns", contract.LABEL_JOB: "a"}
    assert metrics.registry.get_sample_value(contract.METRIC_JOB_READY, labels) is None
    assert metrics.registry.get_sample_value(
        contract.METRIC_JOB_READY, {**labels, contract.LABEL_JOB: "b"}) == 2
    assert metrics.registry.get_sample_value(contract.METRIC_OP_JOBS, {"phase": "Running"}) == 1


def test_forgetting_a_job_never_reconciled_is_harmless() -> None:
    OperatorMetrics().job_phase("ns", "never-seen", None)


@with_promtool
def test_exposition_passes_promtool_check_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.job("ns", "a", job_series(STATUS, 4, 1), job_conditions(STATUS["conditions"]))  # type: ignore[arg-type]
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=generate_latest(
        metrics.registry), capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
