"""The chart's RBAC grants exactly the verbs the operator's code uses: derived, not listed by hand.

The real kopf operator with the real handlers runs a job's whole life against the API emulator
(apply, scale up, scale down, an invalid spec and its fix, an operator restart, deletion), once
on one namespace and once cluster-wide. Every request it sent (kopf's, `kopf/<version>`, and
kube.py's, `crescendo-operator/<version>`, told apart from the test's own by User-Agent) becomes
an RBAC triple (API group, resource[/subresource], verb); the rendered Role or ClusterRole must
grant that set and nothing more. Discovery (`/api`, `/apis/...`) is a non-resource URL that every
authenticated client may read (the built-in system:discovery role) and is not part of the set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from crescendo_spec.crd import GROUP, PLURAL, VERSION

from tests.chart.render import CHART, render
from tests.operator.conftest import JOBS, Cluster, OperatorRunner, eventually, job_manifest
from tests.operator.fake_trainer import FakeTrainer

Permission = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)
OPERATOR_AGENTS = ("kopf/", "crescendo-operator/")


def verb(method: str, params: dict[str, str], name: str | None) -> str:
    """The RBAC verb of one API request (Kubernetes' request-info rules)."""
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]


def used_permissions(requests: Iterable[Any]) -> set[Permission]:
    found: set[Permission] = set()
    for request in requests:
        agent = request.headers.get("User-Agent", "")
        resource_of = request.resource
        if resource_of is None or resource_of.plural is None:
            continue  # discovery: a non-resource URL
        if not agent.startswith(OPERATOR_AGENTS):
            continue  # the test's own client
        resource = request.resource.plural
        if request.subresource:
            resource += "/" + request.subresource
        found.add((request.resource.group or "", resource,
                   verb(str(request.method.value).upper(), request.params, request.name)))
    return found


def granted(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    return {(group, resource, v) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for v in rule["verbs"]}


async def _life_of_a_job(cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer,
                         namespaces: tuple[str, ...] | None) -> None:
    async def pods(count: int) -> bool:
        return len(await cluster.pods()) == count

    trainer.set(desired=64, batch=64, step=10, epoch=0, budget=0)
    operator.start(interval=0.3, namespaces=namespaces)
    await cluster.apply(job_manifest(metrics={"port": trainer.port}))
    await eventually(lambda: pods(2))
    trainer.set(desired=128)
    await eventually(lambda: pods(4))
    trainer.set(desired=32)
    await eventually(lambda: pods(1))
    await cluster.apply(job_manifest("broken", batch={"initial": 512}))
    await eventually(lambda: cluster.events("InvalidSpec"))
    await cluster.patch_job("broken", {"spec": {"batch": {"initial": 64}}})
    await eventually(lambda: _services(cluster, 2))
    await operator.stop()
    operator.start(interval=0.3, namespaces=namespaces)  # resumes both jobs
    await eventually(lambda: cluster.events("ScaledUp"))
    await cluster.delete_job()
    await eventually(lambda: _services(cluster, 1))
    await operator.stop()


async def _services(cluster: Cluster, count: int) -> bool:
    return len(await cluster.services()) == count


def _operator_rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    roles = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(
        "-operator")]
    assert len(roles) == 1, f"{len(roles)} operator {kind}s"
    return list(roles[0]["rules"])


@pytest.mark.parametrize(("namespaces", "values", "kind"), [
    (("default",), [], "Role"),
    (None, [CHART / "ci/watch-all-namespaces-values.yaml"], "ClusterRole"),
], ids=["namespaced-role", "cluster-role"])
async def test_chart_grants_exactly_the_verbs_the_operator_used(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer,
    namespaces: tuple[str, ...] | None, values: list[Any], kind: str,
) -> None:
    await _life_of_a_job(cluster, operator, trainer, namespaces)
    used = used_permissions(cluster.emulator._requests)
    # The scenario reached every kind of call the operator makes (a guard on the scenario).
    assert {("", "pods", "delete"), ("", "events", "create"),
            (GROUP, f"{PLURAL}/status", "patch")} <= used, used
    assert granted(_operator_rules(render(values), kind)) == used


def test_verb_mapping_follows_kubernetes_request_info() -> None:
    assert verb("GET", {"watch": "true"}, None) == "watch"
    assert verb("GET", {}, None) == "list" and verb("GET", {}, "x") == "get"
    assert verb("DELETE", {}, None) == "deletecollection"
    assert verb("PATCH", {}, "x") == "patch" and verb("POST", {}, None) == "create"


def test_a_grant_missing_from_the_chart_would_be_caught() -> None:
    rules = _operator_rules(render(), "Role")
    without_delete = [{**r, "verbs": [v for v in r["verbs"] if v != "delete"]} for r in rules]
    assert ("", "pods", "delete") in granted(rules) - granted(without_delete)


assert JOBS.endswith(f"{GROUP}/{VERSION}/namespaces/default/{PLURAL}")  # the emulator's path
