"""Every benchmark runs, small, in the suite: a change that breaks a bench fails CI, and its JSON
keeps the keys its readers (the closing notes, the README) rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, out: Path, *args: str, timeout: float = 240) -> dict[str, object]:
    done = subprocess.run([sys.executable, str(BENCH / script), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result: dict[str, object] = json.loads(out.read_text())
    return result


def test_lm_ramp_bench_runs_small_and_writes_its_keys(tmp_path: Path) -> None:
    result = run_bench("lm_ramp.py", tmp_path / "lm.json", "--samples", "480",
                       "--ramp-tokens", "10K", "--eval-every", "5", "--eval-sequences", "16")
    for key in ("steps_to_target", "tokens_to_target", "final_val_loss", "target_val_loss",
                "step_ratio", "settings"):
        assert key in result, key
    steps_to_target = result["steps_to_target"]
    assert isinstance(steps_to_target, dict) and set(steps_to_target) == {"fixed", "ramp", "gns"}
    assert steps_to_target["fixed"] is not None, "the baseline reaches its own final loss"
    steps = result["steps"]
    assert isinstance(steps, dict) and steps["ramp"] < steps["fixed"], "the ramp grew B"


def test_algorithms_bench_runs_small_and_writes_its_keys(tmp_path: Path) -> None:
    result = run_bench("algorithms.py", tmp_path / "algorithms.json", "--smoke", timeout=120)
    for key in ("steps_to_target", "final_accuracy", "target_accuracy", "conadv_step_ratio",
                "sequential_adv_step_ratio", "neumann_step_ratio", "hessian_share_of_epoch",
                "workloads", "settings"):
        assert key in result, key
    steps_to_target = result["steps_to_target"]
    assert isinstance(steps_to_target, dict) and steps_to_target["fixed_b0"] is not None, (
        "the baseline reaches its own target")
    hessian_share = result["hessian_share_of_epoch"]
    assert isinstance(hessian_share, float) and 0.0 < hessian_share < 1.0
    workloads = result["workloads"]
    assert isinstance(workloads, dict)
    assert set(workloads) == {"fashion-mnist-cnn", "mnist5k-mlp", "lm-gpt"}
    for name, workload in workloads.items():
        for key in ("steps_to_target", "final_quality", "target", "seeds", "time_to_target",
                    "step_ratio_vs_fixed", "throughput_model", "settings"):
            assert key in workload, (name, key)
        baseline = workload["steps_to_target"]["fixed_b0"]
        assert baseline["mean"] is not None and len(baseline["per_seed"]) == len(
            workload["seeds"]), name
        assert workload["time_to_target"]["fixed_b0"]["mean"] > 0.0, name
        assert workload["throughput_model"]["assumed"] is True, name


def test_conadv_loop_bench_runs_small_and_writes_its_keys(tmp_path: Path) -> None:
    result = run_bench("conadv_loop.py", tmp_path / "conadv.json", "--steps", "20",
                       "--repeats", "1")
    for key in ("median_step_seconds", "conadv_over_plain", "sequential_over_plain",
                "conadv_over_sequential", "settings"):
        assert key in result, key


def test_operator_scale_bench_runs_small_and_writes_its_keys(tmp_path: Path) -> None:
    result = run_bench("operator_scale.py", tmp_path / "scale.json", "--jobs", "3",
                       "--sample", "2")
    for key in ("jobs", "reconcile_p50_s", "reconcile_p99_s", "operator_rss_bytes",
                "reaction_s", "first_pods_all_jobs_s"):
        assert key in result, key


def test_rescale_bench_runs_small_and_loses_no_step(tmp_path: Path) -> None:
    result = run_bench("rescale.py", tmp_path / "rescale.json", "--repeats", "1", timeout=400)
    for key in ("bare_up_s", "bare_down_s", "up_ratio", "down_ratio", "local_up_ratio",
                "local_down_ratio"):
        assert key in result, key
    assert result["lost_steps"] == 0 and result["local_lost_steps"] == 0
