"""Direct scraping remembers a job's newest decision for its staleness window, like Prometheus."""

from __future__ import annotations

import httpx
from crescendo_operator.metrics_source import DirectScrapeSource, ScrapeTarget

from tests.operator.fake_trainer import FakeTrainer


async def test_decision_survives_the_trainers_restart_gap_then_ages_out() -> None:
    trainer = FakeTrainer("digits").start()
    trainer.set(desired=256, batch=128, step=40)
    endpoint = f"127.0.0.1:{trainer.port}"
    async with httpx.AsyncClient(timeout=2) as client:
        source = DirectScrapeSource(client)
        live = await source.read(ScrapeTarget("default", "digits", (endpoint,), 30))
        trainer.stop()  # the trainers restart for a rescale: /metrics is gone for a while
        gap = await source.read(ScrapeTarget("default", "digits", (endpoint,), 30))
        aged = await source.read(ScrapeTarget("default", "digits", (endpoint,), 0))
        other = await source.read(ScrapeTarget("default", "other", (endpoint,), 30))
    assert live.desired_batch is not None and live.desired_batch.value == 256
    assert gap.desired_batch == live.desired_batch, "the remembered sample keeps its own time"
    assert aged.desired_batch is None, "older than the window: forgotten"
    assert other.desired_batch is None, "another job's memory is its own"


def test_each_job_is_read_from_its_metrics_source_prometheus_only_where_configured() -> None:
    from crescendo_operator.config import OperatorConfig
    from crescendo_operator.handlers import Runtime
    from crescendo_operator.metrics_source import PrometheusSource
    from crescendo_operator.opmetrics import OperatorMetrics
    from crescendo_spec import parse_spec

    client = httpx.AsyncClient()
    runtime = Runtime(OperatorConfig(metrics_port=0), OperatorMetrics())
    runtime.direct = DirectScrapeSource(client)
    via_prometheus = parse_spec({"epochs": 1, "scaling": {"metricsSource": "prometheus"}})
    direct = parse_spec({"epochs": 1, "scaling": {"metricsSource": "direct"}})
    assert runtime.source_for(via_prometheus) is runtime.direct, "no Prometheus configured"
    runtime.prometheus = PrometheusSource("http://prometheus:9090", client)
    assert runtime.source_for(via_prometheus) is runtime.prometheus
    assert runtime.source_for(direct) is runtime.direct
