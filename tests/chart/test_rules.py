"""The chart's Prometheus alert rules (charts/crescendo/rules/crescendo-alerts.yaml).

Owns the rule file's checks: promtool accepts it, its promtool unit tests
(tests/chart/rules_test.yaml) fire every alert and keep every alert silent on a near miss, the
harness itself fails on a broken expectation, and every alert carries what an on-call engineer
needs (for, severity, a summary and description naming the job and the value, a runbook link).
The rules' metric names are held to the contract in test_dashboard.py, with the same checker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import RULES, alert_rules
from tests.chart.rules_promql import run_promtool, with_promtool

UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")
RUNBOOK = "https://github.com/crescendo-dev/crescendo/blob/main/docs/troubleshooting.md#"
ANCHORS = {"unschedulable", "job-stuck-pending", "metricsstale", "rescale-pause", "restarts",
           "loss-nan"}
JOB_IN_TEXT = "{{ $labels.crescendo_namespace }}/{{ $labels.crescendo_job }}"


def _unit_cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def test_rule_file_is_a_plain_rule_file_without_helm_templating() -> None:
    text = RULES.read_text()
    assert list(yaml.safe_load(text)) == ["groups"]
    # Alert templates ({{ $labels.x }}, {{ $value }}) are Prometheus's; Helm's would start
    # with a dot or a dash, and the chart embeds this file verbatim.
    assert not re.search(r"\{\{-?\s*(\.|-|include|template|toYaml)", text)


@pytest.mark.parametrize("alert", alert_rules(), ids=lambda a: str(a["alert"]))
def test_every_alert_has_for_severity_and_annotations_naming_job_and_value(
    alert: dict[str, Any],
) -> None:
    assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), "every alert needs a `for:`"
    assert alert["labels"]["severity"] in ("warning", "critical")
    notes = alert["annotations"]
    for key in ("summary", "description"):
        assert JOB_IN_TEXT in notes[key], f"{key} must name the job"
        assert "$value" in notes[key], f"{key} must show the value"
    assert notes["runbook_url"].removeprefix(RUNBOOK) in ANCHORS, notes["runbook_url"]


def test_alerts_link_every_runbook_anchor() -> None:
    used = {a["annotations"]["runbook_url"].removeprefix(RUNBOOK) for a in alert_rules()}
    assert used == ANCHORS


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases = _unit_cases()
    for name in (str(a["alert"]) for a in alert_rules()):
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name} is never shown firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{name} is never shown silent"


@with_promtool
def test_promtool_accepts_the_rule_file() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@with_promtool
def test_alerts_fire_and_stay_silent_as_the_unit_tests_expect() -> None:
    result = run_promtool("test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@with_promtool
def test_promtool_unit_tests_fail_on_an_expectation_that_cannot_hold(tmp_path: Path) -> None:
    broken = yaml.safe_load(UNIT_TESTS.read_text())
    broken["rule_files"] = [str(RULES)]
    firing = next(c for c in _cases_of(broken) if c.get("exp_alerts"))
    firing["exp_alerts"][0]["exp_labels"]["severity"] = "page-the-ceo"
    path = tmp_path / "broken_test.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run_promtool("test", "rules", path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _cases_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for test in document["tests"] for case in test.get("alert_rule_test", [])]

