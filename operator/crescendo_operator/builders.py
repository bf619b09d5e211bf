"""Children of an AdaptiveBatchJob, built from its spec (pure).

Owns the worker's command line (`torchrun_command`) and environment (`worker_env`), which the
local backend reuses for its processes, and the Kubernetes manifests: the headless Service that
gives worker-0 a stable DNS name for the c10d rendezvous, and the worker Pods.

The command line is torchrun's elastic flags, the same for every job, then the entry point:
`-m crescendo_trainer` (the built-in trainer), the user's `script` (torchrun's positional
training script), or `-m <module>`; the spec's `args` follow it. `command` replaces the whole
line. The environment is the same whichever runs: a user's script reads the spec from
CRESCENDO_SPEC_JSON through the trainer library, as the built-in trainer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crescendo_spec import contract
from crescendo_spec.model import JobSpec
from crescendo_spec.parse import API_VERSION, KIND

TRAINER_MODULE = "crescendo_trainer"
CONTAINER_NAME = "trainer"
CHECKPOINT_VOLUME = "checkpoints"
# Long enough for the trainer to finish its step and write a checkpoint after SIGTERM.
TERMINATION_GRACE_SECONDS = 120
# An unprivileged user for images without their own USER line (runAsNonRoot needs a number).
RUN_AS_USER = 1000
# Template keys that belong to the trainer container; all others are pod spec fields.
CONTAINER_KEYS = ("env", "envFrom", "resources", "volumeMounts", "workingDir")


def worker_name(job_name: str, index: int) -> str:
    return f"{job_name}-worker-{index}"


def rendezvous_host(job_name: str, namespace: str) -> str:
    """worker-0's DNS name through the headless Service (pod hostname + subdomain)."""
    return f"{worker_name(job_name, 0)}.{job_name}.{namespace}.svc"


def rendezvous_id(job_name: str, namespace: str) -> str:
    return f"{namespace}-{job_name}"


def torchrun_command(
    job_name: str, spec: JobSpec, rdzv_host: str, *, namespace: str
) -> list[str]:
    """The elastic torchrun line every replica runs (unless `spec.command` overrides it)."""
    if spec.command is not None:
        return [*spec.command, *(spec.args or [])]
    rdzv = spec.rendezvous
    if rdzv.backend == "etcd-v2":
        assert rdzv.etcd_endpoint is not None  # JobSpec's validator guarantees it
        endpoint = rdzv.etcd_endpoint
    else:
        endpoint = f"{rdzv_host}:{rdzv.port}"
    conf = ",".join(
        (
            f"join_timeout={rdzv.join_timeout_seconds}",
            f"last_call_timeout={rdzv.last_call_timeout_seconds}",
            f"keep_alive_interval={rdzv.keep_alive_interval_seconds}",
            f"keep_alive_max_attempt={rdzv.keep_alive_max_attempts}",
        )
    )
    return [
        "torchrun",
        f"--nnodes={spec.replicas.min}:{spec.replicas.max}",
        f"--nproc-per-node={spec.procs_per_replica}",
        f"--rdzv-backend={rdzv.backend}",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rendezvous_id(job_name, namespace)}",
        f"--max-restarts={rdzv.max_restarts}",
        "--monitor-interval=1",
        f"--rdzv-conf={conf}",
        *_entry_point(spec),
        *(spec.args or []),
    ]


def _entry_point(spec: JobSpec) -> list[str]:
    """What torchrun starts in every trainer process: the user's script or module, or ours."""
    if spec.script is not None:
        # torchrun's positional `training_script`: it runs `python -u <script> <args>`.
        return [spec.script]
    return ["-m", spec.module or TRAINER_MODULE]


def worker_env(job_name: str, namespace: str, index: int, spec: JobSpec) -> dict[str, str]:
    """The contract's environment for replica `index` (docs/contract.md)."""
    return {
        contract.ENV_JOB_NAME: job_name,
        contract.ENV_NAMESPACE: namespace,
        contract.ENV_REPLICA_INDEX: str(index),
        contract.ENV_SPEC_JSON: spec.model_dump_json(by_alias=True),
        contract.ENV_METRICS_PORT: str(spec.metrics.port),
        contract.ENV_CHECKPOINT_DIR: spec.checkpoint.dir,
        contract.ENV_DISABLE_SHARED_STORE: "1",
    }


def labels(job_name: str, index: int | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "crescendo",
        "app.kubernetes.io/instance": job_name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "crescendo-operator",
        contract.POD_LABEL_JOB: job_name,
        contract.POD_LABEL_ROLE: "worker",
    }
    if index is not None:
        out[contract.POD_LABEL_REPLICA] = str(index)
    return out


def owner_reference(job_name: str, uid: str) -> dict[str, Any]:
    """Garbage collection: children go when their AdaptiveBatchJob goes."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job_name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def headless_service(
    job_name: str, namespace: str, spec: JobSpec, owner_uid: str
) -> dict[str, Any]:
    """Stable DNS `<job>-worker-<i>.<job>.<ns>.svc` for every worker, ready or not."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": labels(job_name),
            "ownerReferences": [owner_reference(job_name, owner_uid)],
        },
        "spec": {
            "clusterIP": "None",
            # The rendezvous must resolve worker-0 before any trainer is Ready.
            "publishNotReadyAddresses": True,
            "selector": {contract.POD_LABEL_JOB: job_name, contract.POD_LABEL_ROLE: "worker"},
            "ports": [
                {"name": "rendezvous", "port": spec.rendezvous.port, "protocol": "TCP"},
                {"name": "metrics", "port": spec.metrics.port, "protocol": "TCP"},
            ],
        },
    }


def _merge_into(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Template merge: lists are appended, maps merged, scalars replaced (user's value)."""
    for key, value in extra.items():
        current = base.get(key)
        if isinstance(current, list) and isinstance(value, list):
            base[key] = [*current, *value]
        elif isinstance(current, dict) and isinstance(value, Mapping):
            merged = dict(current)
            _merge_into(merged, value)
            base[key] = merged
        else:
            base[key] = value


def template_mounts_checkpoint_dir(spec: JobSpec) -> bool:
    """Whether the user's template mounts a volume of its own at `checkpoint.dir`."""
    mounts = spec.template.get("volumeMounts") or []
    return any(m.get("mountPath") == spec.checkpoint.dir for m in mounts if isinstance(m, dict))


def worker_pod(
    job_name: str, namespace: str, index: int, spec: JobSpec, owner_uid: str
) -> dict[str, Any]:
    """Worker Pod `<job>-worker-<index>`: torchrun, the env contract, GPUs, the user's template."""
    template = dict(spec.template)
    user_meta = template.pop("metadata", {}) or {}
    container_extra = {key: template.pop(key) for key in CONTAINER_KEYS if key in template}
    gpus = {"nvidia.com/gpu": str(spec.gpus_per_replica)} if spec.gpus_per_replica else {}
    # The user's env first, the contract after: for duplicate names the last entry wins.
    env = [*container_extra.pop("env", [])]
    contract_env = worker_env(job_name, namespace, index, spec)
    env += [{"name": k, "value": v} for k, v in contract_env.items()]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": torchrun_command(
            job_name, spec, rendezvous_host(job_name, namespace), namespace=namespace
        ),
        "env": env,
        "ports": [
            {"name": "metrics", "containerPort": spec.metrics.port, "protocol": "TCP"},
            {"name": "rendezvous", "containerPort": spec.rendezvous.port, "protocol": "TCP"},
        ],
        "resources": {"limits": dict(gpus), "requests": dict(gpus)} if gpus else {},
        "readinessProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 5,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    _merge_into(container, container_extra)
    pod_spec: dict[str, Any] = {
        # Hostname + subdomain = the headless Service's per-pod DNS record.
        "hostname": worker_name(job_name, index),
        "subdomain": job_name,
        # torchrun restarts the trainer processes itself; the pod restarts only a dead agent.
        "restartPolicy": "OnFailure",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if not template_mounts_checkpoint_dir(spec):
        # No volume given (a one-replica job, see admission.py): a pod-local emptyDir, so the
        # directory exists and is writable by the non-root trainer (fsGroup) and survives a
        # container restart, though not the pod's deletion.
        source = spec.checkpoint.volume or {"emptyDir": {}}
        pod_spec["volumes"] = [{"name": CHECKPOINT_VOLUME, **source}]
        container.setdefault("volumeMounts", []).insert(
            0, {"name": CHECKPOINT_VOLUME, "mountPath": spec.checkpoint.dir}
        )
    _merge_into(pod_spec, template)
    metadata: dict[str, Any] = {
        "name": worker_name(job_name, index),
        "namespace": namespace,
        "labels": {**user_meta.get("labels", {}), **labels(job_name, index)},
        "ownerReferences": [owner_reference(job_name, owner_uid)],
    }
    if user_meta.get("annotations"):
        metadata["annotations"] = dict(user_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
