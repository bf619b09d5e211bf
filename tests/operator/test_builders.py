"""The worker Pod, the headless Service, the torchrun line and the env contract (golden files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from crescendo_operator.builders import (
    headless_service,
    torchrun_command,
    worker_env,
    worker_pod,
)
from crescendo_spec import contract, parse_spec
from crescendo_spec.model import JobSpec

GOLDEN = Path(__file__).parent / "golden"
UID = "0b8a6b9e-0000-4000-8000-000000000001"
SPEC = parse_spec({
    "image": "crescendo/trainer:0.1.0",
    "gpusPerReplica": 2,
    "replicas": {"min": 1, "max": 4},
    "batch": {"initial": 256, "max": 2048, "perGpuMax": 256, "policy": "absa"},
    "epochs": 10,
    "checkpoint": {"dir": "/ckpt", "volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
    "rendezvous": {"joinTimeoutSeconds": 300, "lastCallTimeoutSeconds": 2, "maxRestarts": 50},
    "template": {
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "env": [{"name": "NCCL_DEBUG", "value": "WARN"},
                {"name": "CRESCENDO_JOB_NAME", "value": "spoofed"}],
        "resources": {"requests": {"memory": "8Gi"}},
        "metadata": {"labels": {"team": "vision"}},
    },
})


def golden(name: str, value: dict[str, Any]) -> None:
    """Compare with tests/operator/golden/<name>; CRESCENDO_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("CRESCENDO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"{name} changed; review, then CRESCENDO_UPDATE_GOLDEN=1"


def test_worker_pod_matches_golden_manifest() -> None:
    pod = worker_pod("resnet", "ml", 1, SPEC, UID)
    for entry in pod["spec"]["containers"][0]["env"]:
        if entry["name"] == contract.ENV_SPEC_JSON:
            entry["value"] = "<the spec as JSON: see the round-trip test>"  # follows model.py
    golden("worker-pod.json", pod)


def test_headless_service_matches_golden_manifest() -> None:
    service = headless_service("resnet", "ml", SPEC, UID)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    golden("service.json", service)


# SPEC's torchrun line up to the entry point: the same whichever program it starts.
HOST = "resnet-worker-0.resnet.ml.svc"
ELASTIC_FLAGS = [
    "torchrun", "--nnodes=1:4", "--nproc-per-node=2", "--rdzv-backend=c10d",
    f"--rdzv-endpoint={HOST}:29400", "--rdzv-id=ml-resnet",
    "--max-restarts=50", "--monitor-interval=1",
    "--rdzv-conf=join_timeout=300,last_call_timeout=2,keep_alive_interval=2,"
    "keep_alive_max_attempt=3",
]


def test_torchrun_line_is_elastic_with_the_spec_timeouts() -> None:
    line = torchrun_command("resnet", SPEC, HOST, namespace="ml")
    assert line == [*ELASTIC_FLAGS, "-m", "crescendo_trainer"]


def test_a_script_is_torchruns_positional_script_after_the_same_elastic_flags() -> None:
    spec = SPEC.model_copy(update={"script": "train/main.py", "args": ["--lr", "0.1"]})
    line = torchrun_command("resnet", spec, HOST, namespace="ml")
    assert line == [*ELASTIC_FLAGS, "train/main.py", "--lr", "0.1"]


def test_a_module_runs_with_dash_m_after_the_same_elastic_flags() -> None:
    spec = SPEC.model_copy(update={"module": "mypkg.train", "args": ["--x"]})
    line = torchrun_command("resnet", spec, HOST, namespace="ml")
    assert line == [*ELASTIC_FLAGS, "-m", "mypkg.train", "--x"]


def test_without_script_or_module_the_builtin_trainer_runs_with_the_args() -> None:
    spec = SPEC.model_copy(update={"args": ["--x"]})
    line = torchrun_command("resnet", spec, HOST, namespace="ml")
    assert line == [*ELASTIC_FLAGS, "-m", "crescendo_trainer", "--x"]
    assert spec.entrypoint_is_builtin


def test_every_entry_point_gets_the_same_env_contract() -> None:
    envs = [
        worker_env("resnet", "ml", 1, SPEC.model_copy(update=update))
        for update in ({}, {"script": "train.py"}, {"module": "mypkg.train"})
    ]
    assert all(set(env) == set(contract.OPERATOR_ENV) for env in envs)
    scripted = JobSpec.model_validate_json(envs[1][contract.ENV_SPEC_JSON])
    assert scripted.script == "train.py"  # the user's script reads its spec from here


def test_etcd_backend_points_the_endpoint_at_etcd() -> None:
    spec = SPEC.model_copy(update={"rendezvous": SPEC.rendezvous.model_copy(
        update={"backend": "etcd-v2", "etcd_endpoint": "etcd:2379"})})
    line = torchrun_command("resnet", spec, "ignored", namespace="ml")
    assert "--rdzv-backend=etcd-v2" in line and "--rdzv-endpoint=etcd:2379" in line


def test_command_override_replaces_torchrun() -> None:
    spec = SPEC.model_copy(update={"command": ["python", "-m", "mine"], "args": ["--x"]})
    assert torchrun_command("j", spec, "h", namespace="n") == ["python", "-m", "mine", "--x"]


def test_command_overrides_a_script_or_module_too() -> None:
    # The spec refuses both at once; a copy that skips validation still runs only the command.
    for update in ({"script": "train.py"}, {"module": "mypkg.train"}):
        spec = SPEC.model_copy(update={"command": ["python", "mine.py"], **update})
        assert torchrun_command("j", spec, "h", namespace="n") == ["python", "mine.py"]


def test_worker_env_is_the_contract_and_round_trips_the_spec() -> None:
    env = worker_env("resnet", "ml", 3, SPEC)
    assert set(env) == set(contract.OPERATOR_ENV)
    assert env[contract.ENV_REPLICA_INDEX] == "3"
    assert env[contract.ENV_DISABLE_SHARED_STORE] == "1"
    assert env[contract.ENV_CHECKPOINT_DIR] == "/ckpt"
    assert JobSpec.model_validate_json(env[contract.ENV_SPEC_JSON]) == SPEC


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"]["containers"][0])


def test_pod_requests_gpus_and_runs_unprivileged() -> None:
    pod = worker_pod("resnet", "ml", 0, SPEC, UID)
    container = _container(pod)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "2", "memory": "8Gi"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_user_template_is_merged_but_cannot_override_the_contract() -> None:
    pod = worker_pod("resnet", "ml", 0, SPEC, UID)
    env = _container(pod)["env"]
    last = {e["name"]: e["value"] for e in env}  # Kubernetes: the last duplicate wins
    assert last["CRESCENDO_JOB_NAME"] == "resnet" and last["NCCL_DEBUG"] == "WARN"
    assert pod["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert pod["metadata"]["labels"]["team"] == "vision"
    assert pod["metadata"]["labels"][contract.POD_LABEL_REPLICA] == "0"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == UID


@pytest.mark.parametrize("index", [0, 5])
def test_pod_dns_name_is_hostname_dot_service(index: int) -> None:
    pod = worker_pod("resnet", "ml", index, SPEC, UID)
    assert pod["metadata"]["name"] == f"resnet-worker-{index}"
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (f"resnet-worker-{index}",
                                                                   "resnet")
