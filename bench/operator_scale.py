"""Operator at scale: N AdaptiveBatchJobs against the API emulator; reconcile cost and reaction.

The operator runs as its own process (`crescendo operator`, so its RSS is its own) against the
test suite's kmock emulator and a stand-in for Prometheus's HTTP API served by this process. It
creates N jobs, waits for their first pods, then raises the desired batch of a sample of jobs
and measures the time from the decision being exported to the last new pod being created.
Reconcile p50/p99 come from the operator's own histogram (interpolated like histogram_quantile).

    .venv/bin/python bench/operator_scale.py --jobs 100 1000 --out bench/out/operator_scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp.web
import httpx
import kmock
import psutil
from crescendo_spec import contract
from crescendo_spec.crd import GROUP, PLURAL, VERSION
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.operator.emulator import Emulator  # noqa: E402

PODS = kmock.resource("", "v1", "pods")
JOB_LABEL = re.compile(r'crescendo_job="([^"]+)"')


STEADY_TICKS = 10  # scrape intervals of the quiet window measured on its own


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakePrometheus:
    """Answers the operator's range query with one fresh sample per job and metric."""

    def __init__(self) -> None:
        self.desired: dict[str, tuple[float, float]] = {}  # job → (batch, decided at)

    async def query(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        match = JOB_LABEL.search(request.query.get("query", ""))
        job = match.group(1) if match else ""
        now = time.time()
        batch, decided = self.desired.get(job, (32.0, now))
        series = [
            {"metric": {"__name__": contract.METRIC_DESIRED_BATCH},
             "values": [[decided, str(batch)]]},
            {"metric": {"__name__": contract.METRIC_STEP}, "values": [[now, "100"]]},
        ]
        return aiohttp.web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": series}}
        )


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AdaptiveBatchJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"gpusPerReplica": 1, "replicas": {"min": 1, "max": 4},
                 "batch": {"initial": 32, "max": 1024, "perGpuMax": 32}, "epochs": 1,
                 "scaling": {"cooldownSeconds": 0, "maxStalenessSeconds": 600},
                 # Admission refuses many-replica jobs without a shared checkpoint volume.
                 "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}}},
    }


def pod_count(emulator: Emulator, prefix: str) -> int:
    return sum(1 for (res, _, name), obj in emulator.objects.items()
               if res == PODS and not obj.deleted and name.startswith(prefix))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over cumulative (le, count) buckets."""
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def reconcile_buckets(text: str) -> list[tuple[float, float]]:
    for family in text_string_to_metric_families(text):
        if family.name == "crescendo_operator_reconcile_duration_seconds":
            return sorted((float(s.labels["le"]), s.value) for s in family.samples
                          if s.name.endswith("_bucket"))
    return []


async def run(n_jobs: int, interval: float, sample: int) -> dict[str, Any]:
    emulator = Emulator()
    emulator.resources.load_bundled()
    emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="AdaptiveBatchJob", namespaced=True, subresources={"status"},
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
    prometheus = FakePrometheus()
    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/query", prometheus.query)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    prom_port, metrics_port = free_port(), free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", prom_port).start()
    async with emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.post("/api/v1/namespaces", json={"metadata": {"name": "default"}})
            env = {**os.environ, "CRESCENDO_KUBE_URL": url,
                   "CRESCENDO_PROMETHEUS_URL": f"http://127.0.0.1:{prom_port}",
                   "CRESCENDO_SCRAPE_INTERVAL_SECONDS": str(interval),
                   "CRESCENDO_NAMESPACES": "default",
                   "CRESCENDO_OPERATOR_METRICS_PORT": str(metrics_port)}
            operator = subprocess.Popen(
                [sys.executable, "-m", "crescendo_operator.cli", "operator"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                jobs_path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
                for i in range(n_jobs):
                    (await http.post(jobs_path, json=job(f"job-{i}"))).raise_for_status()
                    emulator._requests.clear()  # kmock keeps every request: bound its cost
                started = time.monotonic()
                while pod_count(emulator, "job-") < n_jobs:
                    await asyncio.sleep(0.1)
                    emulator._requests.clear()
                    if time.monotonic() - started > 300:
                        raise TimeoutError(f"only {pod_count(emulator, 'job-')} first pods")
                ready_s = time.monotonic() - started
                await asyncio.sleep(3 * interval)  # steady state
                # Steady-state reconciles alone: the histogram's growth over a quiet window (the
                # overall figures are dominated by the start-up burst of pod creations).
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                before = reconcile_buckets((await http.get(metrics_url)).text)
                await asyncio.sleep(STEADY_TICKS * interval)
                after = reconcile_buckets((await http.get(metrics_url)).text)
                steady = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
                reactions = []
                chosen = [f"job-{i}" for i in range(0, n_jobs, max(1, n_jobs // sample))][:sample]
                for name in chosen:
                    decided = time.time()
                    prometheus.desired[name] = (128.0, decided)  # → 4 replicas
                    while pod_count(emulator, f"{name}-worker-") < 4:
                        await asyncio.sleep(0.01)
                        if time.time() - decided > 60:
                            raise TimeoutError(f"{name} did not scale up")
                    reactions.append(time.time() - decided)
                    emulator._requests.clear()  # kmock keeps every request: bound its memory
                await asyncio.sleep(2 * interval)
                text = (await http.get(metrics_url)).text
                rss = psutil.Process(operator.pid).memory_info().rss
            finally:
                operator.terminate()
                try:
                    operator.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    operator.kill()  # a kopf stop can hang on a busy API server
                    operator.wait()
    await runner.cleanup()
    buckets = reconcile_buckets(text)
    return {
        "jobs": n_jobs,
        "reconcile_p50_s": quantile(0.5, buckets),
        "reconcile_p99_s": quantile(0.99, buckets),
        "reconciles": buckets[-1][1] if buckets else 0,
        "steady_reconcile_p50_s": quantile(0.5, steady),
        "steady_reconcile_p99_s": quantile(0.99, steady),
        "steady_reconciles": steady[-1][1] if steady else 0,
        "operator_rss_bytes": rss,
        "reaction_s": statistics.median(reactions),
        "reaction_max_s": max(reactions),
        "reaction_samples": len(reactions),
        "first_pods_all_jobs_s": ready_s,
        "scrape_interval_s": interval,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--interval", type=float, default=1.0, help="operator scrape interval")
    parser.add_argument("--sample", type=int, default=20, help="jobs whose reaction is timed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/operator_scale.json")
    args = parser.parse_args()
    results = [asyncio.run(run(n, args.interval, args.sample)) for n in args.jobs]
    print(f"{'jobs':>6} {'p50 ms':>8} {'p99 ms':>8} {'steady p50':>10} {'steady p99':>10} "
          f"{'RSS MB':>8} {'react s':>8} {'max s':>6} {'interval':>8}")
    for r in results:
        p50, p99 = r["reconcile_p50_s"] * 1e3, r["reconcile_p99_s"] * 1e3
        s50, s99 = r["steady_reconcile_p50_s"] * 1e3, r["steady_reconcile_p99_s"] * 1e3
        print(f"{r['jobs']:>6} {p50:>8.2f} {p99:>8.2f} {s50:>10.2f} {s99:>10.2f}"
              f" {r['operator_rss_bytes'] / 2**20:>8.1f} {r['reaction_s']:>8.2f}"
              f" {r['reaction_max_s']:>6.2f} {r['scrape_interval_s']:>8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload: Any = results[0] if len(results) == 1 else {"runs": results, **results[-1]}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
