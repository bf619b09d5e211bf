"""The Kubernetes path on this machine: the real kopf operator on the API emulator, and a
test kubelet running each Pod it creates as real torchrun agents and trainers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crescendo_spec.trace import read_trace, restarts, steps_monotonic

from tests.operator.conftest import Cluster, OperatorRunner, eventually, job_manifest
from tests.operator.kubelet import Kubelet

pytestmark = pytest.mark.slow

GROWING: dict[str, Any] = {
    "replicas": {"min": 1, "max": 2, "initial": 1},
    "batch": {"initial": 32, "perGpuMax": 32, "max": 64, "policy": "adabatch",
              "adabatch": {"resizeEveryEpochs": 2}},
    "learningRate": {"base": 0.05},
    "model": "cnn",
    "dataset": "mnist5k",
    "epochs": 14,
    "scaling": {"cooldownSeconds": 0, "maxStalenessSeconds": 30, "metricsSource": "direct"},
    "rendezvous": {"joinTimeoutSeconds": 60, "port": 29400},
}


async def test_job_grows_from_one_pod_to_two_on_a_trainer_decision_and_succeeds(
    cluster: Cluster, operator: OperatorRunner, tmp_path: Path
) -> None:
    from crescendo_operator.local.agents import free_port

    spec = {**GROWING, "rendezvous": {**GROWING["rendezvous"], "port": free_port()},
            "metrics": {"port": free_port()}}
    cluster.emulator.node_capacity = 0  # the emulator's stand-in places nothing: ours runs pods
    kubelet = Kubelet(cluster, "tiny", tmp_path)
    kubelet.start()
    operator.start(interval=1.0)
    try:
        await cluster.apply(job_manifest("tiny", **spec))

        async def finished() -> dict[str, Any] | None:
            kubelet.check()
            status = (await cluster.job("tiny")).get("status", {})
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        status = await eventually(finished, timeout=240, interval=1.0)
    finally:
        await kubelet.stop()
    assert status["phase"] == "Succeeded", status
    assert status["desiredGlobalBatchSize"] == 64 and status["rescales"] == 1
    scaled = [e["message"] for e in await cluster.events("ScaledUp")]
    assert scaled == ["1→2: desired batch 64"]

    records = read_trace(tmp_path / "trace.jsonl")
    worlds = [r["world"] for r in records if r["kind"] == "step"]
    assert worlds[0] == 1 and worlds[-1] == 2
    assert records[-1]["kind"] == "done" and steps_monotonic(records)
    assert [r.lost_steps for r in restarts(records)] == [0]
