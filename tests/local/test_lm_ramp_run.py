"""`crescendo local` on the language-model example: the batch grows on the token ramp, the
replicas follow it 1→2, nothing is lost, and the run ends with a validation loss that the summary,
the status and the plot show. The example itself, with a shorter ramp and budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from crescendo_spec.trace import read_trace, restarts, steps_monotonic

from tests.local.conftest import leftovers, run_local

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/lm-ramp.yaml"


def test_lm_ramp_grows_the_batch_on_tokens_and_the_replicas_follow(tmp_path: Path) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    spec["maxSamples"] = 6_000  # of 24,000: the ramp is shortened in proportion
    spec["batch"]["schedule"]["rampUnits"] = "200K"
    spec["language"]["evalEverySteps"] = 40
    spec["language"]["evalSequences"] = 128
    job = tmp_path / "lm-ramp.yaml"
    job.write_text(yaml.safe_dump(manifest))
    run_dir = tmp_path / "run"
    result = run_local(str(job), "--run-dir", str(run_dir), "--max-replicas", "2")
    assert result.returncode == 0, result.stdout + result.stderr

    records = read_trace(run_dir / "trace.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    ramp = [(r["old"], r["new"]) for r in records if r["kind"] == "decision"]
    assert ramp == [(b, b + 16) for b in range(16, 128, 16)], "16→128 in steps of 16"
    assert all(r["code"] == "ramp" for r in records if r["kind"] == "decision")
    assert {r["world"] for r in steps if r["batch"] <= 64} == {1}
    assert steps[-1]["world"] == 2 and steps[-1]["batch"] == 128
    assert steps_monotonic(records)
    assert [r.lost_steps for r in restarts(records)] == [0]
    done = records[-1]
    assert done["kind"] == "done" and 0 < done["val_loss"] < 5.55, "below ln 256 (chance)"
    assert "final validation loss" in result.stdout and "sequences (8,192 tokens)" in result.stdout

    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["rescales"] == 1
    assert status["globalBatchSize"] == 128 and status["replicas"] == 2
    assert (run_dir / "plot.png").stat().st_size > 10_000
    assert leftovers(run_dir) == []
