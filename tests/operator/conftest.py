"""Fixtures for the operator tests: the API emulator, a fake trainer, and a running operator.

The operator is the real kopf runtime with the real handlers (`handlers.register`), pointed at
an in-process kmock emulator on 127.0.0.1 (see emulator.py for the gaps it closes).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import kmock
import kopf
import pytest
from crescendo_operator.config import OperatorConfig
from crescendo_operator.handlers import Runtime, register
from crescendo_spec.crd import GROUP, PLURAL, VERSION

from tests.operator.emulator import Emulator
from tests.operator.fake_trainer import FakeTrainer

JOBS = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"
EVENTS = "/api/v1/namespaces/default/events"

BASE_JOB: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "AdaptiveBatchJob",
    "metadata": {"name": "digits", "namespace": "default"},
    "spec": {
        "image": "crescendo/trainer:test",
        "gpusPerReplica": 0,
        "replicas": {"min": 1, "max": 4, "initial": 2},
        "batch": {"initial": 64, "max": 256, "perGpuMax": 32, "policy": "adabatch"},
        "epochs": 6,
        "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints"}}},
        "scaling": {"cooldownSeconds": 0, "scheduleTimeoutSeconds": 300,
                    "maxStalenessSeconds": 30},
    },
}


def job_manifest(name: str = "digits", **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE_JOB)
    body["metadata"]["name"] = name
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body


class Cluster:
    """The emulator as a test sees it: an HTTP client plus shortcuts."""

    def __init__(self, emulator: Emulator, url: str) -> None:
        self.emulator = emulator
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=5)

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(JOBS, json=body)
        response.raise_for_status()
        return dict(response.json())

    async def job(self, name: str = "digits") -> dict[str, Any]:
        response = await self.http.get(f"{JOBS}/{name}")
        response.raise_for_status()
        return dict(response.json())

    async def patch_job(self, name: str, patch: dict[str, Any]) -> None:
        response = await self.http.patch(
            f"{JOBS}/{name}", json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()

    async def delete_job(self, name: str = "digits") -> None:
        (await self.http.delete(f"{JOBS}/{name}")).raise_for_status()

    async def pods(self, job: str = "digits") -> dict[str, dict[str, Any]]:
        response = await self.http.get(PODS, params={"labelSelector": f"crescendo.dev/job={job}"})
        response.raise_for_status()
        return {p["metadata"]["name"]: p for p in response.json()["items"]}

    async def services(self) -> list[dict[str, Any]]:
        return list((await self.http.get(SERVICES)).json()["items"])

    async def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = (await self.http.get(EVENTS)).json()["items"]
        return [e for e in items if reason is None or e.get("reason") == reason]

    def pod_creations(self) -> int:
        """Pods the API server created (a duplicate is refused with 409 and not counted)."""
        return self.emulator.pods_created


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns a truthy value; fail with its last result."""
    deadline = time.monotonic() + timeout
    result: Any = None
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {timeout}s; last: {result!r}")


@pytest.fixture()
async def cluster() -> AsyncIterator[Cluster]:
    emulator = Emulator()
    emulator.resources.load_bundled()
    emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="AdaptiveBatchJob", namespaced=True, subresources={"status"},
        singular="adaptivebatchjob", shortnames={"abj"},
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
    )
    async with emulator, kmock.Server(emulator) as server:
        test = Cluster(emulator, str(server.url).rstrip("/"))
        (await test.http.post("/api/v1/namespaces",
                              json={"metadata": {"name": "default"}})).raise_for_status()
        yield test
        await test.http.aclose()


@pytest.fixture()
def trainer() -> Iterator[FakeTrainer]:
    fake = FakeTrainer("digits").start()
    yield fake
    fake.stop()


class OperatorRunner:
    """Starts and stops the real kopf operator, in a thread with its own event loop.

    Its own loop because kopf, when it stops, waits up to 5 s for every task of its loop, and
    the emulator's open watch streams would be among them. (A stop still takes ~5 s when the
    reconcile timer fires during kopf's shutdown: its status patch waits on kopf's closed API
    session until kopf's fixed 5 s hung-task timeout.)
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.runtime: Runtime | None = None  # the running operator's clients and metrics

    def start(
        self,
        interval: float = 0.3,
        prometheus_url: str | None = None,
        namespaces: tuple[str, ...] | None = ("default",),
    ) -> None:
        """Run the operator on `namespaces`, or on the whole cluster when that is None."""
        config = OperatorConfig(
            prometheus_url=prometheus_url, scrape_interval_seconds=interval,
            metrics_port=0, kube_url=self.url, http_timeout_seconds=1.0,
        )
        registry = kopf.OperatorRegistry()
        self.runtime = register(registry, config)
        settings = kopf.OperatorSettings()
        settings.peering.standalone = True
        settings.watching.server_timeout = 10
        # Per-object workers idle 5 s by default; the operator's stop waits for them.
        settings.queueing.idle_timeout = 0.3
        settings.queueing.exit_timeout = 0.3
        # After its last patch, a stopping timer waits this long for the watch to echo it.
        settings.persistence.consistency_timeout = 0.3
        self._stop = threading.Event()
        stop = self._stop
        self._thread = threading.Thread(
            target=lambda: asyncio.run(kopf.operator(
                registry=registry, settings=settings, clusterwide=namespaces is None,
                namespaces=list(namespaces or ()), standalone=True, stop_flag=stop,
            )),
            name="kopf", daemon=True,
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        # Joined off the test's loop: the emulator must keep serving while kopf stops.
        await asyncio.to_thread(self._thread.join, 10)
        assert not self._thread.is_alive(), "kopf did not stop within 10 s"
        self._thread = None


@pytest.fixture()
async def operator(cluster: Cluster) -> AsyncIterator[OperatorRunner]:
    runner = OperatorRunner(cluster.url)
    yield runner
    await runner.stop()
