"""The chart's Grafana dashboard (charts/crescendo/dashboards/crescendo.json), checked statically.

No Grafana server can run on this machine, so the dashboard is checked without one: it
round-trips through the grafana-foundation-sdk dashboard model, every panel is placed, sourced
and queried, every query parses (promtool, with the dashboard variables substituted), reads only
the contract's metrics and filters on the selected namespaces and jobs. This module also holds
the alert rules' expressions to the contract, with the same metric-name checker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.chart.render import (
    DASHBOARD,
    RULES,
    dashboard,
    dashboard_panels,
    panel_queries,
)
from tests.chart.rules_promql import (
    check_expressions,
    contract_problems,
    label_values_query,
    metric_names,
    selectors,
    substitute,
    with_promtool,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB_FILTERS = ('crescendo_namespace=~"$namespace"', 'crescendo_job=~"$job"')
PANELS = {
    "Global batch size", "World size", "Optimizer step", "Epoch", "Rescales", "Budget reached",
    "Global and desired batch size", "Replicas", "Batch decisions by reason", "Conditions",
    "Loss", "Eval accuracy", "Validation loss", "Perplexity", "Samples/s", "Learning rate",
    "Step duration", "Checkpoint age",
    "Hessian top eigenvalue λ and trace", "Gradient noise scale", "Adversarial ratio",
    "Rescale pause and lost steps", "Restarts",
}



def _all_placed(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows and panels alike: everything that takes room on the grid."""
    for panel in panels:
        yield panel
        yield from _all_placed(panel.get("panels", []))


def _queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard (panel targets and annotation queries), by
    `panel/refId` or `annotation/name`."""
    annotations = dashboard()["annotations"]["list"]
    return panel_queries() | {f"annotation/{a['name']}": a["expr"]
                              for a in annotations if "expr" in a}


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]  # recording rules too, if any
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def _contains(original: Any, copy: Any) -> bool:
    """Whether everything in `original` is in `copy` (which may add defaults)."""
    if isinstance(original, dict):
        return isinstance(copy, dict) and all(
            key in copy and _contains(value, copy[key]) for key, value in original.items()
        )
    if isinstance(original, list):
        return (isinstance(copy, list) and len(copy) == len(original)
                and all(_contains(a, b) for a, b in zip(original, copy, strict=True)))
    return bool(original == copy)


def _nulls(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "options" and value is None:
                yield f"{path}.options"
            yield from _nulls(value, f"{path}.{key}")
    elif isinstance(node, list):
        for n, item in enumerate(node):
            yield from _nulls(item, f"{path}[{n}]")


# --- identity and import -----------------------------------------------------------------------
def test_dashboard_is_importable_by_hand_with_the_agreed_identity() -> None:
    loaded = dashboard()
    assert loaded["uid"] == "crescendo-jobs"
    assert loaded["title"] == "Crescendo / Adaptive batch jobs"
    assert loaded["schemaVersion"] == 39
    assert loaded["refresh"] == "30s"
    assert loaded["time"] == {"from": "now-6h", "to": "now"}
    assert "crescendo" in loaded["tags"]
    assert "__inputs" not in loaded  # no import-time data source prompt: the variable picks
    assert "{{ ." not in DASHBOARD.read_text()  # embedded verbatim: no Helm templating


def test_dashboard_has_no_null_options_the_sdk_would_choke_on() -> None:
    assert list(_nulls(dashboard())) == []


def test_dashboard_round_trips_through_the_grafana_sdk_with_every_panel_intact() -> None:
    register_default_plugins()  # typed panel options and Prometheus queries, not raw dicts
    original = dashboard()
    model = Dashboard.from_json(original)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    assert again["uid"] == original["uid"]
    assert len(again["panels"]) == len(original["panels"])
    for before, after in zip(original["panels"], again["panels"], strict=True):
        assert _contains(before, after), f"the SDK model lost part of panel {before['title']!r}"


def test_dashboard_shows_every_agreed_panel() -> None:
    assert {p["title"] for p in dashboard_panels(dashboard()["panels"])} == PANELS


# --- layout and sources ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "panel", list(dashboard_panels(dashboard()["panels"])), ids=lambda p: p["title"]
)
def test_every_panel_has_the_datasource_variable_a_place_and_queries(
    panel: dict[str, Any],
) -> None:
    assert panel["datasource"] == DATASOURCE
    assert panel.get("options") is not None
    grid = panel["gridPos"]
    assert all(isinstance(grid[k], int) for k in ("w", "h", "x", "y")), grid
    assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
    targets = panel["targets"]
    assert targets, "a panel without a query shows nothing"
    assert all(t["expr"] and t["refId"] for t in targets)
    assert len({t["refId"] for t in targets}) == len(targets)
    assert all(t["datasource"] == DATASOURCE for t in targets)
    assert all("{{crescendo_job}}" in t["legendFormat"] for t in targets)


def test_no_two_panels_overlap() -> None:
    placed = [(p["title"], p["gridPos"]) for p in _all_placed(dashboard()["panels"])]
    for (a, ga), (b, gb) in combinations(placed, 2):
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
        assert apart, f"{a!r} overlaps {b!r}"


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in _all_placed(dashboard()["panels"])]
    assert len(ids) == len(set(ids))


# --- variables ---------------------------------------------------------------------------------
def test_variables_pick_datasource_namespace_and_jobs() -> None:
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    namespace, job = variables["namespace"], variables["job"]
    assert namespace["query"] == (
        "label_values(crescendo_trainer_global_batch_size, crescendo_namespace)"
    )
    assert job["query"] == (
        'label_values(crescendo_trainer_global_batch_size{crescendo_namespace=~"$namespace"}, '
        "crescendo_job)"
    )
    assert job["multi"] and job["includeAll"]
    assert all(v["datasource"] == DATASOURCE for v in (namespace, job))


def test_variable_queries_read_contract_metrics_and_labels() -> None:
    for name in ("namespace", "job"):
        series, label = label_values_query(_variables()[name]["query"])
        assert contract_problems(series) == []
        assert label == f"crescendo_{name}"


# --- queries -----------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", _queries().values(), ids=_queries().keys())
def test_every_query_filters_on_the_selected_namespaces_and_jobs(expr: str) -> None:
    found = selectors(expr)
    assert {name for name, _ in found} == metric_names(expr), "a selector without matchers"
    for name, matchers in found:
        assert all(f in matchers for f in JOB_FILTERS), f"{name}{matchers} ignores $job"


@pytest.mark.parametrize("expr", _queries().values(), ids=_queries().keys())
def test_every_query_reads_only_contract_metrics(expr: str) -> None:
    assert contract_problems(expr) == []


@pytest.mark.parametrize("expr", _rule_exprs())
def test_every_alert_rule_reads_only_contract_metrics(expr: str) -> None:
    assert contract_problems(expr) == []


@with_promtool
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    result = check_expressions((substitute(e) for e in _queries().values()), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the checkers can fail ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr",
    [
        "up",
        'kube_pod_info{namespace="ml"}',
        'max by (crescendo_job) (crescendo_trainer_loss{crescendo_job=~"$job"}) * on () up',
        "rate(container_cpu_usage_seconds_total[5m])",
        "crescendo_trainer_loss_total + crescendo_trainer_losses",
        '{__name__="crescendo_trainer_loss"}',
    ],
)
def test_contract_check_rejects_metrics_outside_the_contract(expr: str) -> None:
    assert contract_problems(expr) != []


def test_metric_names_skip_functions_labels_keywords_strings_and_numbers() -> None:
    expr = (
        'sum without (instance) (rate(crescendo_trainer_samples_total{job="x"}[5m] offset 1h))'
        " / on (crescendo_job) group_left (reason) crescendo_operator_job_replicas"
        ' > bool 1e-3 and label_replace(crescendo_trainer_loss, "to", "$1", "from", "(.*)")'
        " or histogram_quantile(0.99, sum by (le) "
        "(rate(crescendo_operator_reconcile_duration_seconds_bucket[5m]))) unless -Inf"
    )
    assert metric_names(expr) == {
        "crescendo_trainer_samples_total",
        "crescendo_operator_job_replicas",
        "crescendo_trainer_loss",
        "crescendo_operator_reconcile_duration_seconds_bucket",
    }


@with_promtool
def test_promql_check_fails_on_an_expression_promtool_rejects(tmp_path: Path) -> None:
    result = check_expressions(["sum(crescendo_trainer_loss{crescendo_job=~\"x\"}"], tmp_path)
    assert result.returncode != 0
