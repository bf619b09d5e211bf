"""`crescendo local --prometheus-url`: the controller reads decisions through a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crescendo_spec.trace import read_trace, restarts

from tests.local.conftest import leftovers, run_local, write_job
from tests.prometheus_server import needs_prometheus, prometheus_server

pytestmark = [pytest.mark.slow, *needs_prometheus]


def test_replicas_follow_decisions_read_through_prometheus(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # The run directory's target list, rewritten by crescendo local as replicas come and go.
    scrape = (
        "  - job_name: crescendo-local\n"
        "    file_sd_configs:\n"
        f"      - files: ['{run_dir / 'prometheus-targets.json'}']\n"
        "        refresh_interval: 1s\n"
    )
    with prometheus_server(tmp_path, scrape) as url:
        result = run_local(str(write_job(tmp_path / "job.yaml")), "--run-dir", str(run_dir),
                           "--max-replicas", "2", "--prometheus-url", url)
    assert result.returncode == 0, result.stdout + result.stderr
    records = read_trace(run_dir / "trace.jsonl")
    worlds = [r["world"] for r in records if r["kind"] == "step"]
    assert worlds[0] == 1 and worlds[-1] == 2
    assert [r.lost_steps for r in restarts(records)] == [0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["desiredGlobalBatchSize"] == 64
    assert leftovers(run_dir) == []
