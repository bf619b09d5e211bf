"""Where the trainers' decisions are read: Prometheus's HTTP API, or the pods' /metrics directly.

Owns the two `DecisionSource` implementations. Both return the newest sample of each contract
metric for one job (selected by the labels crescendo_job and crescendo_namespace) with the time
it was taken, so the pure `scaling.check_decision` can judge its age. Neither judges values.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from crescendo_spec import contract
from prometheus_client.parser import text_string_to_metric_families

from crescendo_operator.scaling import Sample, TrainerReading

logger = logging.getLogger(__name__)

# Contract metric → TrainerReading field.
FIELDS = {
    contract.METRIC_DESIRED_BATCH: "desired_batch",
    contract.METRIC_GLOBAL_BATCH: "global_batch",
    contract.METRIC_STEP: "step",
    contract.METRIC_EPOCH: "epoch",
    contract.METRIC_BUDGET_DONE: "budget_done",
}


@dataclass(frozen=True)
class ScrapeTarget:
    """One job: its identity labels, and its replicas' /metrics endpoints (direct scraping)."""

    namespace: str
    job: str
    endpoints: tuple[str, ...] = ()
    window_seconds: float = 120.0  # samples older than this cannot be accepted anyway


def newest(samples: Iterable[Sample]) -> Sample | None:
    """The most recent sample; on a tie the largest value (ranks agree on decisions)."""
    ranked = [s for s in samples]
    if not ranked:
        return None
    return max(ranked, key=lambda s: (s.timestamp, s.value if not math.isnan(s.value) else -1))


def reading_from(samples: dict[str, list[Sample]]) -> TrainerReading:
    return TrainerReading(**{FIELDS[name]: newest(found) for name, found in samples.items()})


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def promql(target: ScrapeTarget) -> str:
    """One range selector for all contract metrics of a job: raw samples with their timestamps.

    An instant query would stamp every value with the evaluation time, hiding stale decisions.
    """
    names = "|".join(sorted(FIELDS))
    window = max(1, math.ceil(target.window_seconds))
    return (
        f'{{__name__=~"{names}",{contract.LABEL_JOB}="{_quote(target.job)}",'
        f'{contract.LABEL_NAMESPACE}="{_quote(target.namespace)}"}}[{window}s]'
    )


class PrometheusSource:
    """Reads decisions through Prometheus's `/api/v1/query`."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._client = client

    async def read(self, target: ScrapeTarget) -> TrainerReading:
        try:
            response = await self._client.get(self._url, params={"query": promql(target)})
            response.raise_for_status()
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            # Prometheus down: no sample, which the controller reports as MetricsStale.
            logger.warning(
                "Prometheus query for %s/%s failed: %s", target.namespace, target.job, exc
            )
            return TrainerReading()
        if body.get("status") != "success":
            logger.warning("Prometheus answered %s: %s", body.get("errorType"), body.get("error"))
            return TrainerReading()
        samples: dict[str, list[Sample]] = {name: [] for name in FIELDS}
        for series in body.get("data", {}).get("result", []):
            name = series.get("metric", {}).get("__name__")
            if name in samples:
                for stamp, value in series.get("values", [])[-1:]:
                    samples[name].append(Sample(float(value), float(stamp)))
        return reading_from(samples)


def parse_exposition(text: str, target: ScrapeTarget, scraped_at: float) -> dict[str, list[Sample]]:
    """Contract samples of `target` in one /metrics page (other jobs' labels are skipped)."""
    samples: dict[str, list[Sample]] = {name: [] for name in FIELDS}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in samples:
                continue
            job = sample.labels.get(contract.LABEL_JOB)
            namespace = sample.labels.get(contract.LABEL_NAMESPACE)
            if job not in (None, target.job) or namespace not in (None, target.namespace):
                continue
            stamp = float(sample.timestamp) if sample.timestamp is not None else scraped_at
            samples[sample.name].append(Sample(float(sample.value), stamp))
    return samples


class DirectScrapeSource:
    """Reads decisions from every replica's /metrics (no Prometheus configured).

    Like Prometheus, it remembers each job's newest samples for `window_seconds`: while the
    trainers restart for a rescale their /metrics is briefly gone, and that gap is no reason to
    call the decision stale (check_decision still judges the remembered sample by its age).
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._last: dict[tuple[str, str], dict[str, Sample]] = {}

    async def _scrape(self, endpoint: str, target: ScrapeTarget) -> dict[str, list[Sample]]:
        try:
            response = await self._client.get(f"http://{endpoint}/metrics")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            logger.debug("scrape of %s failed: %s", endpoint, exc)
            return {}
        try:
            return parse_exposition(response.text, target, time.time())
        except ValueError as exc:
            logger.warning("unparseable /metrics from %s: %s", endpoint, exc)
            return {}

    async def read(self, target: ScrapeTarget) -> TrainerReading:
        pages: Sequence[dict[str, list[Sample]]] = await asyncio.gather(
            *(self._scrape(endpoint, target) for endpoint in target.endpoints)
        )
        merged: dict[str, list[Sample]] = {name: [] for name in FIELDS}
        for page in pages:
            for name, found in page.items():
                merged[name].extend(found)
        remembered = self._last.setdefault((target.namespace, target.job), {})
        oldest = time.time() - target.window_seconds
        for name, sample in list(remembered.items()):
            if sample.timestamp >= oldest:
                merged[name].append(sample)
            else:
                del remembered[name]
        reading = reading_from(merged)
        for name, field in FIELDS.items():
            sample = getattr(reading, field)
            if sample is not None:
                remembered[name] = sample
        return reading
