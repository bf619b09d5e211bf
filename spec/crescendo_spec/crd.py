"""The AdaptiveBatchJob CustomResourceDefinition, generated from the pydantic `JobSpec`.

Owns the translation of pydantic's JSON Schema (draft 2020-12, `$ref`s, `anyOf [X, null]`,
numeric `exclusiveMinimum`) into the *structural* OpenAPI v3.0 schema the API server requires
(inlined, `nullable`, boolean `exclusiveMinimum`, `x-kubernetes-preserve-unknown-fields` for
free-form maps), plus the hand-written status schema, the subresources and the printer columns.
`manifests/crd/adaptivebatchjobs.crescendo.dev.yaml` is this module's output (`crescendo crd`).
"""

from __future__ import annotations

from typing import Any

import yaml

from crescendo_spec.model import JobSpec
from crescendo_spec.parse import API_VERSION, KIND

GROUP = "crescendo.dev"
VERSION = "v1alpha1"
PLURAL = "adaptivebatchjobs"
SINGULAR = "adaptivebatchjob"
SHORT_NAMES = ("abj",)
CRD_NAME = f"{PLURAL}.{GROUP}"
assert f"{GROUP}/{VERSION}" == API_VERSION

# Scale subresource: `kubectl scale` writes the manual pin; the live count and the selector come
# from status, so an HPA or `kubectl get --subresource=scale` sees what really runs.
SPEC_REPLICAS_PATH = ".spec.replicas.manual"
STATUS_REPLICAS_PATH = ".status.replicas"
LABEL_SELECTOR_PATH = ".status.selector"

PRINTER_COLUMNS: tuple[dict[str, str], ...] = (
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Batch", "type": "integer", "jsonPath": ".status.globalBatchSize"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
    {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Time since the job was created."},
)

# Keys of pydantic's output that carry no meaning for the API server (or are replaced below).
_DROPPED = {"title", "$defs", "additionalProperties", "prefixItems"}

# Cross-field rules pydantic checks in model validators; the API server checks them with CEL
# (x-kubernetes-validations) so `kubectl apply` already rejects them. Keyed by section path.
_CEL_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    (): [
        {
            "rule": "has(self.epochs) || has(self.maxSteps) || has(self.maxSamples)",
            "message": "one of epochs, maxSteps or maxSamples is required",
        },
        {
            "rule": "[has(self.command), has(self.script), has(self.module)]"
            ".filter(x, x).size() <= 1",
            "message": "set at most one of command, script or module",
        },
        {
            "rule": "has(self.command) || has(self.script) || has(self.module) || "
            "((self.model == 'gpt') == (self.dataset == 'python-stdlib'))",
            "message": "model gpt trains on a token corpus (python-stdlib), the other models "
            "on image data sets",
        },
        {
            "rule": "self.model != 'gpt' || ((!has(self.adversarial) || "
            "self.adversarial.method == 'none') && "
            "(!has(self.batch) || self.batch.policy != 'absa'))",
            "message": "model gpt cannot use adversarial training (adversarial.method none, "
            "batch.policy not absa)",
        },
    ],
    ("replicas",): [
        {"rule": "self.min <= self.max", "message": "min must be <= max"},
        {
            "rule": "!has(self.initial) || (self.min <= self.initial && self.initial <= self.max)",
            "message": "initial must lie in [min, max]",
        },
    ],
    # batch.policy schedule: CEL checks which of the two schedules is set and the ramp's
    # increment; the schema's `pattern`s check the strings' grammar. Only the operator (parse_spec,
    # through crescendo_spec.schedule) checks what needs the strings' numbers: a step schedule's
    # first threshold is 0, thresholds strictly increase, batches lie in [1, max], the first batch
    # equals initial; a count is a whole number ('1.5' is not); rampUnits is at least 1.
    ("batch",): [
        {"rule": "self.initial <= self.max", "message": "initial must be <= max"},
        {
            "rule": "self.policy != 'schedule' || (has(self.schedule) && "
            "has(self.schedule.steps) != has(self.schedule.rampUnits))",
            "message": "policy 'schedule' needs exactly one of schedule.steps or "
            "schedule.rampUnits",
        },
        {
            "rule": "self.policy != 'schedule' || !has(self.schedule) || "
            "!has(self.schedule.rampUnits) || (self.max - self.initial) % "
            "(has(self.schedule.increment) ? self.schedule.increment : self.initial) == 0",
            "message": "schedule.increment (default initial) must divide max - initial",
        },
    ],
    ("rendezvous",): [
        {
            "rule": "self.backend != 'etcd-v2' || has(self.etcdEndpoint)",
            "message": "etcdEndpoint is required when backend is 'etcd-v2'",
        }
    ],
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every `$ref` (the API server rejects them)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {key: _resolve(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    return node


def _without_nulls(value: Any) -> Any:
    """Defaults without null members: the API server would store them, and CEL's has() sees them."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _openapi(node: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """One JSON Schema node (already inlined) → an OpenAPI v3.0 structural node."""
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        # pydantic writes `X | None` as anyOf [X, {type: null}]; OpenAPI v3.0 says nullable.
        options = [option for option in any_of if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"{'.'.join(path) or 'spec'}: only `X | None` unions are supported")
        node = {**options[0], **node, "nullable": True}
    if "default" in node:
        node["default"] = _without_nulls(node["default"])
        if node["default"] is None:
            node.pop("default")  # a null default is what absence means already
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            node["minimum" if bound == "exclusiveMinimum" else "maximum"] = node[bound]
            node[bound] = True
    if "prefixItems" in node:
        # A fixed-length tuple (e.g. LAMB's betas): same item type, exact length.
        item_types = {item["type"] for item in node["prefixItems"]}
        if len(item_types) != 1:
            raise ValueError(f"{'.'.join(path)}: tuples must have one item type")
        node["items"] = {"type": item_types.pop()}
        node["minItems"] = node["maxItems"] = len(node["prefixItems"])
    out: dict[str, Any] = {key: value for key, value in node.items() if key not in _DROPPED}
    if out.get("type") == "object" and "properties" not in node:
        # dict[str, Any]: a free-form map (pod template fields, a volume source).
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "properties" in out:
        out["properties"] = {
            name: _openapi(child, (*path, name)) for name, child in out["properties"].items()
        }
    if "items" in out:
        out["items"] = _openapi(out["items"], (*path, "[]"))
    if path in _CEL_RULES:
        out["x-kubernetes-validations"] = _CEL_RULES[path]
    return out


def spec_schema() -> dict[str, Any]:
    """The structural openAPIV3Schema of `spec`, from `JobSpec`."""
    raw = JobSpec.model_json_schema(by_alias=True, mode="validation")
    inlined = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    return _openapi(inlined)


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "description": "Created, Running, Scaling, Scaled, "
                     "MetricsStale, Succeeded or Failed."},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"],
                       "description": "Whether the condition holds."},
            "reason": {"type": "string", "description": "Why, in one CamelCase word."},
            "message": {"type": "string", "description": "Why, for people."},
            "lastTransitionTime": {"type": "string", "format": "date-time",
                                   "description": "When the status last changed."},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                                   "description": "The spec generation it was computed from."},
        },
    }


def status_schema() -> dict[str, Any]:
    """The status the operator writes (hand-written: it is not user input)."""
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "enum": ["Pending", "Running", "Scaling", "Succeeded", "Failed"],
                "description": "Summary of the conditions for the Status column.",
            },
            "replicas": {**count, "description": "Worker pods that exist."},
            "readyReplicas": {**count, "description": "Worker pods that are Ready."},
            "selector": {"type": "string", "description": "Label selector of the worker pods."},
            "globalBatchSize": {**count, "description": "Global batch the trainers run at."},
            "desiredGlobalBatchSize": {**count, "description": "Newest accepted decision."},
            "step": {**count, "description": "Optimizer step."},
            "epoch": {**count, "description": "Epoch."},
            "budgetReached": {"type": "boolean", "description": "The trainers said: done."},
            "lastScaleTime": {"type": "string", "format": "date-time",
                              "description": "When the replica count last changed."},
            "rescales": {**count, "description": "Replica-count changes so far."},
            "restarts": {**count, "description": "Container restarts of the worker pods."},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                                   "description": "The spec generation this status reflects."},
            "conditions": {
                "description": "The job's state, one entry per condition type.",
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "crescendo"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": SPEC_REPLICAS_PATH,
                            "statusReplicasPath": STATUS_REPLICAS_PATH,
                            "labelSelectorPath": LABEL_SELECTOR_PATH,
                        },
                    },
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed under manifests/crd/."""
    header = "# Generated by `crescendo crd` from crescendo_spec.model.JobSpec: do not edit.\n"
    body = yaml.safe_dump(crd(), sort_keys=False, allow_unicode=True, width=100)
    return header + body
