"""The AdaptiveBatchJob spec reference (docs/spec-reference.md), generated from the CRD.

Owns the rendering of a CRD's structural schema into Markdown: one table per object of `spec`
(dotted paths such as `batch.absa.kappa`) with type, default, allowed values, bounds, required-ness
and description; then the status fields, the printer columns and the scale subresource. The CRD is
itself generated from the pydantic model (`crescendo_spec.crd`), so the model stays the one source:
a description missing there is rendered empty here, never made up, and `main` names it on stderr.

    python -m crescendo_spec.reference > docs/spec-reference.md
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COMMAND = "python -m crescendo_spec.reference > docs/spec-reference.md"
COLUMNS = ("Field", "Type", "Required", "Default", "Allowed", "Description")


@dataclass(frozen=True)
class Node:
    """One object of the schema whose properties get a table: `path` is dotted from the root."""

    path: str
    schema: Mapping[str, Any]


def _version(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    versions: Sequence[Mapping[str, Any]] = crd["spec"]["versions"]
    return next((v for v in versions if v.get("storage")), versions[0])


def _root(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    schema: Mapping[str, Any] = _version(crd)["schema"]["openAPIV3Schema"]
    return schema


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def objects(schema: Mapping[str, Any], path: str = "") -> Iterator[Node]:
    """Every object with properties under `schema` (itself first), depth first, schema order.

    The items of an array of objects are the object `path[]`.
    """
    if "properties" in schema:
        yield Node(path, schema)
        for name, child in schema["properties"].items():
            yield from objects(child, _join(path, name))
    elif schema.get("type") == "array" and "items" in schema:
        yield from objects(schema["items"], f"{path}[]")


def undocumented(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Dotted paths of the properties under `schema` that have no description."""
    out = []
    for node in objects(schema, path):
        for name, child in node.schema["properties"].items():
            if not str(child.get("description", "")).strip():
                out.append(_join(node.path, name))
    return out


def _value(value: Any) -> str:
    """A default or bound as written in YAML/JSON: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """Table-cell text: one line, `|` escaped so it does not split the cell (GFM: even in code)."""
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than `-`/`_` dropped."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def type_of(schema: Mapping[str, Any]) -> str:
    """The type as a reader writes it: `integer`, `array of string`, `object (free-form)`."""
    kind = str(schema.get("type", "any"))
    if kind == "array":
        kind = "array of " + type_of(schema.get("items", {}))
    elif kind == "object" and schema.get("x-kubernetes-preserve-unknown-fields"):
        kind = "object (free-form)"
    if "format" in schema:
        kind += f" ({schema['format']})"
    if schema.get("nullable"):
        kind += ", nullable"
    return kind


def allowed(schema: Mapping[str, Any]) -> str:
    """Enum, numeric bounds, length, item count and pattern of one field, `; `-separated."""
    parts: list[str] = []
    if "enum" in schema:
        parts.append(", ".join(_code(_value(v)) for v in schema["enum"]))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        below = "<" if schema.get("exclusiveMinimum") is True else "≤"
        above = "<" if schema.get("exclusiveMaximum") is True else "≤"
        if low is not None and high is not None:
            parts.append(f"{_value(low)} {below} x {above} {_value(high)}")
        elif low is not None:
            parts.append(f"x {'>' if below == '<' else '≥'} {_value(low)}")
        else:
            parts.append(f"x {above} {_value(high)}")
    for key, label in (("minLength", "length ≥"), ("maxLength", "length ≤")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    low_items, high_items = schema.get("minItems"), schema.get("maxItems")
    if low_items is not None and low_items == high_items:
        parts.append(f"exactly {low_items} items")
    else:
        if low_items is not None:
            parts.append(f"≥ {low_items} items")
        if high_items is not None:
            parts.append(f"≤ {high_items} items")
    if "pattern" in schema:
        parts.append("pattern " + _code(str(schema["pattern"])))
    return "; ".join(parts)


def _default(schema: Mapping[str, Any]) -> str:
    if "default" not in schema or "properties" in schema:
        return ""  # an object's default is its fields' defaults, listed in its own table
    return _code(_value(schema["default"]))


def _summary(description: str) -> str:
    """The first paragraph: the rest is printed above the object's own table."""
    return description.strip().split("\n\n", 1)[0]


def _row(name: str, schema: Mapping[str, Any], required: bool, scope: str) -> str:
    description = _summary(str(schema.get("description", "")))
    rule = allowed(schema)
    if "properties" in schema:
        title = _join(scope, name)
        rule = f"see [{title}](#{_anchor(title)})"
    elif schema.get("type") == "array" and "properties" in schema.get("items", {}):
        title = _join(scope, name + "[]")
        rule = f"see [{title}](#{_anchor(title)})"
    cells = (
        _code(name),
        type_of(schema),
        "yes" if required else "no",
        _default(schema),
        rule,
        description,
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(node: Node, scope: str) -> list[str]:
    required = set(node.schema.get("required", ()))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, child in node.schema["properties"].items():
        lines.append(_row(_join(node.path, name), child, name in required, scope))
    return lines


def _rules(schema: Mapping[str, Any]) -> list[str]:
    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return []
    lines = ["", "Checked by the API server on `kubectl apply`:", ""]
    for rule in rules:
        lines.append(f"- {rule.get('message', '')}: {_code(str(rule['rule']))}")
    return lines


def _section(node: Node, scope: str, intro: str = "") -> list[str]:
    title = _join(scope, node.path)
    level = "##" if "." not in node.path and "[]" not in node.path else "###"
    lines = ["", f"{level} {title}", ""]
    for text in (intro, str(node.schema.get("description", "")).strip()):
        if text:
            lines += [text, ""]
    lines += _table(node, scope)
    lines += _rules(node.schema)
    return lines


def _printer_columns(version: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    lines = [
        "| Column | Type | Shows | Description |",
        "|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns", ()):
        path = str(column["jsonPath"])
        target: Mapping[str, Any] = root
        for part in path.strip(".").split("."):
            target = target.get("properties", {}).get(part, {})
        description = column.get("description") or target.get("description", "")
        cells = (column["name"], str(column["type"]), _code(path), _summary(str(description)))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _scale(version: Mapping[str, Any]) -> list[str]:
    scale = version.get("subresources", {}).get("scale")
    if not scale:
        return []
    return [
        "",
        "## Scale subresource",
        "",
        "| | Path |",
        "|---|---|",
        f"| `kubectl scale --replicas=N` writes | {_code(scale['specReplicasPath'])} |",
        f"| the replica count read back | {_code(scale['statusReplicasPath'])} |",
        f"| the pods' label selector | {_code(scale.get('labelSelectorPath', ''))} |",
    ]


def spec_reference(crd: Mapping[str, Any]) -> str:
    """The Markdown reference of a CRD's `spec`, `status`, printer columns and scale paths."""
    names = crd["spec"]["names"]
    version = _version(crd)
    root = _root(crd)
    properties = root.get("properties", {})
    group = crd["spec"]["group"]
    short_names = list(names.get("shortNames") or ())
    listed = (short_names or [names["plural"]])[0]
    lines = [
        f"# {names['kind']} reference",
        "",
        f"<!-- Generated from the CRD by `{COMMAND}`: do not edit. -->",
        "",
        f"Generated from the CRD `{crd['metadata']['name']}`, which is itself generated from the",
        "spec model (`spec/crescendo_spec/model.py`); do not edit this page. After changing the",
        "model, regenerate it (and the CRD) with:",
        "",
        "```",
        f".venv/bin/{COMMAND}",
        f"crescendo crd > manifests/crd/{crd['metadata']['name']}.yaml",
        "```",
        "",
        f"API version `{group}/{version['name']}`, kind `{names['kind']}`, "
        f"scope {crd['spec'].get('scope', 'Namespaced')}, "
        f"short names {', '.join(_code(n) for n in short_names) or 'none'}.",
        "Every field is optional unless the Required column says yes. A field left out takes its",
        "default; a nullable field left out has no value, and its description says what applies.",
        "`x` in the Allowed column is the field's value.",
    ]
    spec = properties.get("spec")
    if spec is not None:
        for node in objects(spec):
            lines += _section(node, "spec")
    status = properties.get("status")
    if status is not None:
        intro = "Written by the operator (the status subresource); users do not set it."
        for node in objects(status):
            lines += _section(node, "status", intro if not node.path else "")
    lines += [
        "",
        f"## Printer columns (`kubectl get {listed}`)",
        "",
    ]
    lines += _printer_columns(version, root)
    lines += _scale(version)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference of the project's CRD; name undocumented fields on stderr."""
    del argv  # no options: the page has one source
    from crescendo_spec.crd import crd

    body = crd()
    sys.stdout.write(spec_reference(body))
    root = _root(body)["properties"]
    missing = [f"spec.{p}" for p in undocumented(root["spec"])]
    missing += [f"status.{p}" for p in undocumented(root["status"])]
    if missing:
        print(
            "no description in the schema (add one in spec/crescendo_spec/model.py or crd.py): "
            + ", ".join(missing),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
