"""`crescendo local --baseline` end to end: the job, then its fixed-B0 baseline, then the
comparison (about 35 s on 2 cores: two 4-epoch mnist5k runs, each with its start-up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crescendo_spec.trace import read_trace

from tests.local.conftest import leftovers, run_local, write_job

pytestmark = pytest.mark.slow


def test_baseline_runs_after_the_job_with_a_fixed_batch_and_the_comparison_is_written(
    tmp_path: Path,
) -> None:
    job, run_dir = write_job(tmp_path / "job.yaml", epochs=4), tmp_path / "run"
    result = run_local(str(job), "--run-dir", str(run_dir), "--max-replicas", "2", "--baseline",
                       timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    policy, baseline = read_trace(run_dir / "trace.jsonl"), read_trace(
        run_dir / "baseline/trace.jsonl")
    assert policy[-1]["kind"] == "done" and baseline[-1]["kind"] == "done"
    assert [(r["old"], r["new"]) for r in policy if r["kind"] == "decision"] == [(32, 64)]
    baseline_steps = [r for r in baseline if r["kind"] == "step"]
    assert {(r["batch"], r["world"]) for r in baseline_steps} == {(32, 1)}
    assert not [r for r in baseline if r["kind"] == "decision"]
    assert policy[0]["time"] < baseline[0]["time"], "the runs overlapped"
    for directory in (run_dir, run_dir / "baseline"):
        assert json.loads((directory / "status.json").read_text())["phase"] == "Succeeded"

    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert set(comparison) == {"quality", "higher_is_better", "target", "policy", "baseline",
                               "ratios_baseline_over_policy"}
    assert comparison["quality"] == "accuracy"
    assert comparison["policy"]["label"] == "adabatch"
    assert comparison["baseline"]["label"] == "fixed B0=32"
    assert comparison["baseline"]["steps"] == baseline_steps[-1]["step"]
    assert comparison["baseline"]["to_target"] is not None  # its own final quality
    assert set(comparison["ratios_baseline_over_policy"]) == {"steps", "samples",
                                                             "wall_seconds"}
    assert (run_dir / "comparison.png").stat().st_size > 10_000
    assert "the policy against its fixed-B0 baseline" in result.stdout
    assert f"comparison: {run_dir / 'comparison.json'}" in result.stdout
    assert leftovers(run_dir) == []
