"""docs/spec-reference.md: generated from the CRD, committed up to date, listing every field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from crescendo_spec import reference
from crescendo_spec.crd import PRINTER_COLUMNS, crd, spec_schema, status_schema
from crescendo_spec.reference import spec_reference, undocumented

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs/spec-reference.md"
REGENERATE = ".venv/bin/python -m crescendo_spec.reference > docs/spec-reference.md"


def _leaves(node: dict[str, Any], path: str = "") -> list[str]:
    """Dotted paths of the schema's leaf fields, walked here independently of the generator."""
    if "properties" in node:
        out: list[str] = []
        for name, child in node["properties"].items():
            out += _leaves(child, f"{path}.{name}" if path else name)
        return out
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        return _leaves(node["items"], f"{path}[]")
    return [path]


def _row_names(page: str) -> set[str]:
    """The backticked first cell of every table row."""
    return set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE))


def test_committed_page_is_what_the_generator_prints() -> None:
    assert PAGE.read_text() == spec_reference(crd()), f"regenerate it: {REGENERATE}"


def test_every_leaf_field_of_the_spec_schema_has_a_row() -> None:
    leaves = _leaves(spec_schema())
    assert "batch.absa.kappa" in leaves and "template" in leaves
    missing = set(leaves) - _row_names(PAGE.read_text())
    assert not missing, f"fields without a row in {PAGE.name}: {sorted(missing)}"


def test_every_status_field_and_printer_column_is_listed() -> None:
    page = PAGE.read_text()
    missing = set(_leaves(status_schema())) - _row_names(page)
    assert not missing, f"status fields without a row: {sorted(missing)}"
    for column in PRINTER_COLUMNS:
        assert f"| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in page


def test_every_table_row_has_as_many_cells_as_its_header() -> None:
    # An unescaped `|` (the model/dataset patterns hold some) would add a cell.
    widths: list[int] = []
    for line in PAGE.read_text().splitlines():
        if not line.startswith("|"):
            widths = []
            continue
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        if not widths:
            widths.append(cells)
        assert cells == widths[0], line


def test_main_prints_the_page_and_names_undocumented_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert reference.main() == 0
    out, err = capsys.readouterr()
    assert out == spec_reference(crd())
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    for path in undocumented(schema["spec"]):
        assert f"spec.{path}" in err


# --- the renderer on a tiny hand-made CRD --------------------------------------------------------

TINY_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["size"],
    "properties": {
        "size": {
            "type": "integer",
            "default": 4,
            "minimum": 1,
            "maximum": 8,
            "description": "How many.",
        },
        "mode": {
            "type": "string",
            "enum": ["fast", "slow"],
            "default": "fast",
            "description": "Speed.",
        },
        "rate": {
            "type": "number",
            "minimum": 0.0,
            "exclusiveMinimum": True,
            "description": "Per\nsecond.",
        },
        "ratio": {"type": "number", "maximum": 1.0, "exclusiveMaximum": True, "nullable": True},
        "tags": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": 2,
            "default": ["a", "b"],
        },
        "name": {"type": "string", "pattern": "^(a|b)$", "minLength": 1},
        "inner": {
            "type": "object",
            "description": "Nested.\n\nMore about it.",
            "default": {"flag": False},
            "properties": {"flag": {"type": "boolean", "default": False, "description": "On?"}},
            "x-kubernetes-validations": [{"rule": "self.flag || true", "message": "always"}],
        },
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
TINY_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "size": {"type": "integer", "minimum": 0, "description": "Live count."},
        "selector": {"type": "string"},
    },
}
TINY: dict[str, Any] = {
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "storage": True,
                "subresources": {
                    "scale": {
                        "specReplicasPath": ".spec.size",
                        "statusReplicasPath": ".status.size",
                        "labelSelectorPath": ".status.selector",
                    }
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".status.size"}
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": TINY_SPEC, "status": TINY_STATUS},
                    }
                },
            }
        ],
    },
}


@pytest.mark.parametrize(
    "row",
    [
        "| `size` | integer | yes | `4` | 1 ≤ x ≤ 8 | How many. |",
        "| `mode` | string | no | `fast` | `fast`, `slow` | Speed. |",
        "| `rate` | number | no |  | x > 0.0 | Per second. |",
        "| `ratio` | number, nullable | no |  | x < 1.0 |  |",
        '| `tags` | array of string | no | `["a", "b"]` | exactly 2 items |  |',
        "| `name` | string | no |  | length ≥ 1; pattern `^(a\\|b)$` |  |",
        "| `inner` | object | no |  | see [spec.inner](#specinner) | Nested. |",
        "| `inner.flag` | boolean | no | `false` |  | On? |",
        "| `extra` | object (free-form) | no |  |  |  |",
        "| `size` | integer | no |  | x ≥ 0 | Live count. |",
        "| Size | integer | `.status.size` | Live count. |",
        "| `kubectl scale --replicas=N` writes | `.spec.size` |",
    ],
)
def test_tiny_schema_renders_types_defaults_enums_and_bounds(row: str) -> None:
    assert row in spec_reference(TINY).splitlines()


def test_tiny_schema_sections_rules_and_header() -> None:
    page = spec_reference(TINY)
    assert page.startswith("# Widget reference\n")
    assert "python -m crescendo_spec.reference > docs/spec-reference.md" in page
    assert "short names `wd`" in page
    assert "## Printer columns (`kubectl get wd`)" in page
    sections = re.findall(r"^#+ (spec\S*|status\S*)$", page, flags=re.MULTILINE)
    assert sections == ["spec", "spec.inner", "status"]
    # The whole description above the object's table; its first paragraph in the parent's row.
    assert "## spec.inner\n\nNested.\n\nMore about it.\n\n| Field |" in page
    assert "- always: `self.flag || true`" in page


def test_undocumented_lists_fields_without_description() -> None:
    assert undocumented(TINY_SPEC) == ["ratio", "tags", "name", "extra"]


# --- the hand-written guides name only fields that exist -----------------------------------------

GUIDES = ("docs/install.md", "docs/usage.md", "docs/troubleshooting.md")


def _resolves(path: str, schema: dict[str, Any]) -> bool:
    node = schema
    for part in path.split("."):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True  # a free-form map (template, checkpoint.volume): any key below is fine
        if part == "*" and "properties" in node:
            return True
        if part not in node.get("properties", {}):
            return False
        node = node["properties"][part]
    return True


@pytest.mark.parametrize("guide", GUIDES)
def test_spec_fields_named_in_the_guides_exist(guide: str) -> None:
    schema = spec_schema()
    text = (ROOT / guide).read_text()
    named = set(re.findall(r"`([a-z][A-Za-z]*(?:\.(?:[a-z][A-Za-z]*|\*))+)`", text))
    sections = {k for k, v in schema["properties"].items() if v.get("type") == "object"}
    # Dotted names under a spec section, or spelled `spec.x`, are spec fields; the others are
    # chart values (`operator.prometheusUrl`, and `image.tag`: the spec's image is a string).
    fields = {n.removeprefix("spec.") for n in named if n.startswith("spec.")}
    fields |= {n for n in named if n.split(".")[0] in sections}
    assert fields, f"{guide} names no spec field"
    unknown = sorted(f for f in fields if not _resolves(f, schema))
    assert not unknown, f"{guide} names spec fields the CRD does not have: {unknown}"


# --- troubleshooting.md keeps the anchors the alert rules link to --------------------------------

TROUBLESHOOTING = ROOT / "docs/troubleshooting.md"
ALERT_RULES = ROOT / "charts/crescendo/rules/crescendo-alerts.yaml"
SECTIONS = {
    "Unschedulable": "unschedulable",
    "Job stuck Pending": "job-stuck-pending",
    "MetricsStale": "metricsstale",
    "Rescale pause": "rescale-pause",
    "Restarts": "restarts",
    "Loss NaN": "loss-nan",
    "Rendezvous timeouts": "rendezvous-timeouts",
}


def _anchors(page: str) -> set[str]:
    """GitHub's anchors of the page's `## ` headings (code blocks skipped)."""
    outside = re.sub(r"^```.*?^```", "", page, flags=re.MULTILINE | re.DOTALL)
    titles = re.findall(r"^## (.+)$", outside, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


def test_troubleshooting_has_a_section_per_alert_topic() -> None:
    anchors = _anchors(TROUBLESHOOTING.read_text())
    for title, anchor in SECTIONS.items():
        assert anchor in anchors, f"## {title} (#{anchor}) is missing"


def test_every_runbook_link_of_the_alert_rules_has_its_section() -> None:
    if not ALERT_RULES.exists():
        pytest.skip(f"{ALERT_RULES.relative_to(ROOT)} is not in this checkout")
    links = re.findall(r"docs/troubleshooting\.md#([\w-]+)", ALERT_RULES.read_text())
    assert links, "the alert rules link no runbook"
    missing = set(links) - _anchors(TROUBLESHOOTING.read_text())
    assert not missing, f"runbook anchors without a section: {sorted(missing)}"
