"""The CRD: generated from JobSpec, committed up to date, structural, and accepting the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from crescendo_spec.crd import crd, crd_yaml, spec_schema
from crescendo_spec.model import Batch
from crescendo_spec.parse import SpecError, parse_spec, spec_of

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests/crd/adaptivebatchjobs.crescendo.dev.yaml"
EXAMPLES = sorted((ROOT / "manifests/examples").glob("*.yaml"))


def _version() -> dict[str, Any]:
    return dict(crd()["spec"]["versions"][0])


def openapi_validate(document: Any) -> None:
    """OpenAPI v3.0 schemas are draft-4 shaped (boolean exclusiveMinimum): validate as draft 4."""
    schema = _version()["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema).validate(document)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                out += _walk(child, f"{path}.{name}")
        if "items" in node:
            out += _walk(node["items"], f"{path}[]")
    return out


def test_committed_crd_is_what_crescendo_crd_prints() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "run: crescendo crd > " + str(CRD_FILE)


def test_crd_names_scope_and_subresources() -> None:
    body = crd()
    assert body["metadata"]["name"] == "adaptivebatchjobs.crescendo.dev"
    assert body["spec"]["names"]["shortNames"] == ["abj"]
    version = _version()
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas.manual",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns_are_pinned() -> None:
    columns = [(c["name"], c["jsonPath"]) for c in _version()["additionalPrinterColumns"]]
    assert columns == [
        ("Ready", ".status.readyReplicas"),
        ("Replicas", ".status.replicas"),
        ("Batch", ".status.globalBatchSize"),
        ("Step", ".status.step"),
        ("Status", ".status.phase"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_schema_is_structural_openapi_v3_0() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "$defs" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path
        assert not ("properties" in node and "additionalProperties" in node), path


def test_schema_carries_bounds_enums_defaults_and_nullable() -> None:
    spec = spec_schema()["properties"]
    assert spec["gpusPerReplica"] == {**spec["gpusPerReplica"], "minimum": 0, "maximum": 16}
    assert spec["batch"]["properties"]["policy"]["enum"] == list(
        get_args(Batch.model_fields["policy"].annotation))
    kappa = spec["batch"]["properties"]["absa"]["properties"]["kappa"]
    assert kappa["minimum"] == 1.0 and kappa["exclusiveMinimum"] is True
    assert spec["replicas"]["properties"]["manual"]["nullable"] is True
    assert spec["scaling"]["properties"]["cooldownSeconds"]["default"] == 60
    assert spec["template"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["checkpoint"]["properties"]["volume"]["x-kubernetes-preserve-unknown-fields"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_schema_and_parse_spec(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    openapi_validate(document)
    parse_spec(spec_of(document))


def test_the_schema_rejects_what_parse_spec_rejects_by_bounds() -> None:
    document = yaml.safe_load(EXAMPLES[0].read_text())
    document["spec"]["gpusPerReplica"] = 17
    with pytest.raises(jsonschema.ValidationError):
        openapi_validate(document)
    with pytest.raises(SpecError, match=r"spec\.gpusPerReplica"):
        parse_spec(document["spec"])


def test_demo_example_is_the_small_cpu_job() -> None:
    spec = parse_spec(spec_of(yaml.safe_load((ROOT / "manifests/examples/digits-adabatch.yaml")
                                             .read_text())))
    assert (spec.dataset, spec.model, spec.batch.policy, spec.gpus_per_replica) == (
        "digits", "cnn", "adabatch", 0)
    assert (spec.replicas.min, spec.replicas.max) == (1, 3)
    assert (spec.batch.initial, spec.batch.per_gpu_max, spec.batch.max) == (32, 32, 128)
    assert spec.batch.adabatch.resize_every_epochs == 2
