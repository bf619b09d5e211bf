"""What a cluster run needs beyond the spec model: a shared checkpoint volume for many replicas."""

from __future__ import annotations

from typing import Any

import pytest
from crescendo_operator.admission import cluster_problems, parse_for_cluster
from crescendo_operator.builders import CHECKPOINT_VOLUME, worker_pod
from crescendo_spec.parse import SpecError, parse_spec

BASE: dict[str, Any] = {
    "image": "x",
    "batch": {"initial": 32, "max": 128, "perGpuMax": 32},
    "epochs": 1,
}
PVC = {"persistentVolumeClaim": {"claimName": "ck"}}


def _spec(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def test_many_replicas_without_a_shared_volume_are_refused_naming_the_field() -> None:
    with pytest.raises(SpecError) as refused:
        parse_for_cluster(_spec(replicas={"min": 1, "max": 4}))
    (problem,) = refused.value.problems
    assert problem.startswith("spec.checkpoint.volume: required when replicas.max > 1")


def test_a_checkpoint_volume_or_a_template_mount_at_the_dir_is_enough() -> None:
    assert parse_for_cluster(_spec(replicas={"max": 4}, checkpoint={"volume": PVC}))
    mounted = _spec(replicas={"max": 4}, template={
        "volumes": [{"name": "shared", **PVC}],
        "volumeMounts": [{"name": "shared", "mountPath": "/checkpoints"}]})
    assert cluster_problems(parse_spec(mounted)) == []
    elsewhere = _spec(replicas={"max": 4}, template={
        "volumeMounts": [{"name": "shared", "mountPath": "/elsewhere"}]})
    assert len(cluster_problems(parse_spec(elsewhere))) == 1


def test_one_replica_runs_on_a_pod_local_empty_dir() -> None:
    spec = parse_for_cluster(_spec(replicas={"min": 1, "max": 1, "initial": 1}))
    pod = worker_pod("job", "ns", 0, spec, "uid")
    assert pod["spec"]["volumes"] == [{"name": CHECKPOINT_VOLUME, "emptyDir": {}}]
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": CHECKPOINT_VOLUME, "mountPath": "/checkpoints"} in mounts


def test_a_template_mount_at_the_dir_is_not_shadowed_by_the_default_volume() -> None:
    spec = parse_spec(_spec(replicas={"max": 4}, template={
        "volumes": [{"name": "shared", **PVC}],
        "volumeMounts": [{"name": "shared", "mountPath": "/checkpoints"}]}))
    pod = worker_pod("job", "ns", 0, spec, "uid")
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["shared"]
    assert [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]] == [
        "/checkpoints"]
