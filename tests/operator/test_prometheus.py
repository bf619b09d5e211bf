"""The operator reading decisions through a real Prometheus server (Debian's `prometheus`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from crescendo_operator.metrics_source import PrometheusSource, ScrapeTarget

from tests.operator.conftest import Cluster, OperatorRunner, eventually, job_manifest
from tests.operator.fake_trainer import FakeTrainer
from tests.prometheus_server import needs_prometheus, prometheus_server

pytestmark = needs_prometheus
SCRAPE_INTERVAL = 1.0


@pytest.fixture()
def prometheus(trainer: FakeTrainer, tmp_path: Path) -> Iterator[str]:
    scrape = (
        "  - job_name: fake-trainer\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{trainer.port}']}}]\n"
    )
    with prometheus_server(tmp_path, scrape) as url:
        yield url


async def _first_sample(url: str) -> float | None:
    async with httpx.AsyncClient(timeout=2) as client:
        source = PrometheusSource(url, client)
        reading = await source.read(ScrapeTarget("default", "digits", window_seconds=30))
    return reading.desired_batch.value if reading.desired_batch else None


async def test_prometheus_source_returns_newest_sample_with_its_own_timestamp(
    prometheus: str, trainer: FakeTrainer
) -> None:
    trainer.set(desired=64, step=3)
    # Targets are applied on Prometheus's 5 s tick: the first sample takes ~6 s.
    assert await eventually(lambda: _first_sample(prometheus), timeout=15, interval=0.5) == 64
    async with httpx.AsyncClient(timeout=2) as client:
        reading = await PrometheusSource(prometheus, client).read(
            ScrapeTarget("default", "digits", window_seconds=30))
    assert reading.step is not None and reading.step.value == 3
    assert reading.desired_batch is not None
    assert time.time() - reading.desired_batch.timestamp < 3 * SCRAPE_INTERVAL
    async with httpx.AsyncClient(timeout=2) as client:
        other = await PrometheusSource(prometheus, client).read(
            ScrapeTarget("default", "someone-else", window_seconds=30))
    assert other.desired_batch is None


@pytest.mark.slow
async def test_operator_scales_from_prometheus_within_scrape_interval_plus_a_second(
    cluster: Cluster, operator: OperatorRunner, trainer: FakeTrainer, prometheus: str
) -> None:
    trainer.set(desired=64, batch=64, step=1, epoch=0, budget=0)
    await eventually(lambda: _first_sample(prometheus), timeout=15, interval=0.5)
    interval = 0.5
    operator.start(interval=interval, prometheus_url=prometheus)
    await cluster.apply(job_manifest(metrics={"port": trainer.port}))
    await eventually(lambda: _count(cluster, 2))
    started = time.monotonic()
    trainer.set(desired=128)
    # Prometheus scrapes within 1 s; the operator reads every `interval` (< 1 s here).
    await eventually(lambda: _count(cluster, 4), timeout=SCRAPE_INTERVAL + 1.0 + interval)
    assert time.monotonic() - started <= SCRAPE_INTERVAL + 1.0 + interval
    trainer.set(desired=float("nan"))
    stale = await eventually(lambda: _stale(cluster), timeout=5)
    assert stale == "InvalidValue"
    assert len(await cluster.pods()) == 4


async def _count(cluster: Cluster, count: int) -> bool:
    return len(await cluster.pods()) == count


async def _stale(cluster: Cluster) -> str | None:
    job = await cluster.job()
    for found in job.get("status", {}).get("conditions", []):
        if found["type"] == "MetricsStale" and found["status"] == "True":
            return str(found["reason"])
    return None
