"""charts/crescendo for the tests: its files (alert rules, dashboard) and helm rendering with
the real binary (tests/chart/tools.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.chart.tools import binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/crescendo"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RULES = CHART / "rules/crescendo-alerts.yaml"
DASHBOARD = CHART / "dashboards/crescendo.json"
NAMESPACE = "crescendo-system"
RELEASE = "r"


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run helm; the caller checks the return code (a failing render is sometimes the point)."""
    return subprocess.run(
        [str(binary("helm")), *map(str, args)], capture_output=True, text=True, check=False
    )


def template_text(
    values: Sequence[Path] = (), sets: Sequence[str] = (), *, crds: bool = False
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    args += [a for v in values for a in ("-f", v)]
    args += [a for s in sets for a in ("--set", s)]
    return helm(*args, *(["--include-crds"] if crds else []))


def render(
    values: Sequence[Path] = (), sets: Sequence[str] = (), *, crds: bool = False
) -> list[dict[str, Any]]:
    """The rendered objects (documents that are not empty), or AssertionError with helm's say."""
    result = template_text(values, sets, crds=crds)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of the rule file (recording rules left out)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those kept inside (collapsed) rows."""
    for panel in panels:
        if panel["type"] == "row":
            yield from dashboard_panels(panel.get("panels", []))
        else:
            yield panel


def panel_queries() -> dict[str, str]:
    """Every panel target's PromQL, by `panel title/refId`."""
    return {f"{p['title']}/{t['refId']}": t["expr"]
            for p in dashboard_panels(dashboard()["panels"]) for t in p["targets"]}
