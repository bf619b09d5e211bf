"""`crescendo local` end to end: real torchrun agents, scaled by the operator's controller."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from crescendo_spec.trace import read_trace, restarts, steps_monotonic

from tests.local.conftest import crescendo, leftovers, run_local, write_job

pytestmark = pytest.mark.slow


def test_replicas_follow_the_policy_and_the_run_completes_with_no_lost_step(
    tmp_path: Path,
) -> None:
    # A run directory longer than a console line: its paths must still print on one line each.
    job, run_dir = write_job(tmp_path / "job.yaml"), tmp_path / ("run-" + "x" * 80)
    result = run_local(str(job), "--run-dir", str(run_dir), "--max-replicas", "2")
    assert result.returncode == 0, result.stdout + result.stderr

    records = read_trace(run_dir / "trace.jsonl")
    assert records[-1]["kind"] == "done"
    steps = [r for r in records if r["kind"] == "step"]
    assert steps[-1]["epoch"] == 13, "the run stopped before its 14-epoch budget"
    decisions = [(r["old"], r["new"]) for r in records if r["kind"] == "decision"]
    assert decisions == [(32, 64)]
    decided_at = next(r["step"] for r in records if r["kind"] == "decision")
    worlds = [r["world"] for r in steps]
    assert worlds[0] == 1 and worlds[-1] == 2, "replicas did not follow the decision"
    assert all(r["world"] == 1 for r in steps if r["step"] <= decided_at)
    assert steps_monotonic(records)
    assert [r.lost_steps for r in restarts(records)] == [0]
    assert "ScaledUp: 1→2: desired batch 64" in result.stdout

    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["replicas"] == 2
    assert status["desiredGlobalBatchSize"] == 64 and status["rescales"] == 1
    assert (run_dir / "plot.png").stat().st_size > 10_000
    assert f"plot: {run_dir / 'plot.png'}" in result.stdout
    assert f"status: {run_dir / 'status.json'}" in result.stdout
    assert leftovers(run_dir) == []


def test_ctrl_c_stops_everything_keeps_the_checkpoint_and_resume_finishes(
    tmp_path: Path,
) -> None:
    job, run_dir = write_job(tmp_path / "job.yaml", epochs=6), tmp_path / "run"
    process = subprocess.Popen(
        crescendo("local", str(job), "--run-dir", str(run_dir), "--max-replicas", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
    while not [r for r in read_trace(run_dir / "trace.jsonl") if r["kind"] == "step"]:
        assert time.monotonic() < deadline and process.poll() is None, "no step in 120 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 1, output
    assert "--resume" in output and str(run_dir) in output
    assert leftovers(run_dir) == []
    stopped = [r for r in read_trace(run_dir / "trace.jsonl") if r["kind"] == "stop"]
    assert len(stopped) == 1

    again = run_local(str(job), "--run-dir", str(run_dir))
    assert again.returncode == 2 and "--resume" in again.stderr, "a rerun clobbered the run"
    resumed = run_local(str(job), "--run-dir", str(run_dir), "--resume", "--max-replicas", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = read_trace(run_dir / "trace.jsonl")
    assert records[-1]["kind"] == "done" and steps_monotonic(records)
    assert [r.lost_steps for r in restarts(records)] == [0]
    assert leftovers(run_dir) == []


def test_invalid_job_gets_the_operators_validation_message_and_starts_nothing(
    tmp_path: Path,
) -> None:
    job = write_job(tmp_path / "job.yaml", batch={"initial": 512, "max": 256})
    result = run_local(str(job), "--run-dir", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2
    assert "spec.batch: initial (512) must be <= max (256)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_busy_rendezvous_port_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_local(str(write_job(tmp_path / "job.yaml")), "--run-dir",
                           str(tmp_path / "run"), "--rdzv-port", str(port), timeout=60)
    assert result.returncode == 2
    assert f"rendezvous port {port} (--rdzv-port) is in use" in result.stderr
