"""The chart's operator container, run as it is declared: its args and env, as a real process.

The Deployment's args and env (from `helm template`) start `crescendo operator` (the image's
ENTRYPOINT) against the API emulator, with only the API server's URL added (in a cluster it comes
from the service account). kopf's /healthz, which the liveness and readiness probes hit, must
answer; the operator's /metrics must serve its contract names; an applied job must get its pods;
SIGTERM (what the kubelet sends) must stop it cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from crescendo_spec import contract

from tests.chart.render import one, render
from tests.operator.conftest import Cluster, eventually, job_manifest
from tests.prometheus_server import free_port


@pytest.fixture()
async def container(cluster: Cluster) -> AsyncIterator[tuple[subprocess.Popen[bytes], int, int]]:
    health, metrics = free_port(), free_port()
    deployment = one(render(sets=[
        f"operator.healthPort={health}", f"operator.metricsPort={metrics}",
        "operator.watchNamespaces={default}", "operator.scrapeIntervalSeconds=0.5",
    ]), "Deployment")
    spec = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {**os.environ, **{e["name"]: e["value"] for e in spec["env"]},
           "CRESCENDO_KUBE_URL": cluster.url}
    crescendo = Path(sys.executable).with_name("crescendo")
    process = subprocess.Popen([str(crescendo), "operator", *spec["args"]], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield process, health, metrics
    if process.poll() is None:
        process.kill()
        process.wait()


async def _get(url: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return await client.get(url)
    except httpx.HTTPError:
        return None


async def test_chart_container_spec_runs_the_operator_probed_and_stopped_by_sigterm(
    cluster: Cluster, container: tuple[subprocess.Popen[bytes], int, int]
) -> None:
    process, health, metrics = container

    async def healthy() -> bool:
        response = await _get(f"http://127.0.0.1:{health}/healthz")
        return response is not None and response.status_code == 200

    await eventually(healthy, timeout=30, interval=0.2)
    exposition = await _get(f"http://127.0.0.1:{metrics}/metrics")
    assert exposition is not None and contract.METRIC_OP_JOBS in exposition.text
    await cluster.apply(job_manifest())

    async def pods() -> bool:
        return len(await cluster.pods()) == 2

    await eventually(pods, timeout=15)
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 20)
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert code == 0, stderr[-2000:]
